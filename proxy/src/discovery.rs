//! The control-plane client (in progress).

use std::sync::Arc;

use crate::drain::Watch;
use crate::state::Shared;

pub async fn run(_shared: Arc<Shared>, mut drain: Watch) {
    drain.signaled().await;
}
