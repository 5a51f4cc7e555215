//! Order books: a plain reference implementation and the fast one.
