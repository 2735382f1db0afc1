//! One module per resource; each registers its routes.

pub mod agents;
pub mod chat;
pub mod inbox;
pub mod sessions;
pub mod tasks;
