//! WebSocket at `/api/v1/ws`.

use crate::AppState;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::response::Response;

pub async fn upgrade(State(_g): State<AppState>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(|_socket| async {})
}
