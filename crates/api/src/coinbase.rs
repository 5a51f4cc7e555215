//! The Coinbase-Exchange-compatible surface at the root path.

use crate::AppState;

pub fn router() -> axum::Router<AppState> {
    axum::Router::new()
}
