//! What a running daemon shares between its DNS thread, its API and its
//! control tasks. Below `daemon`, `http` and `metrics`, so that none of
//! them imports another to reach it.

use std::sync::{Arc, RwLock};

use crate::{
    cache::AnswerCache, config::Config, forward::Router, local_answers::LocalAnswers,
    masters::MasterStatus, selfcheck::Health, stats::Stats,
};

pub struct Shared {
    pub config: RwLock<Config>,
    pub stats: Arc<Stats>,
    pub cache: Arc<AnswerCache>,
    pub local: Arc<LocalAnswers>,
    pub router: Arc<Router>,
    pub masters: Arc<MasterStatus>,
    pub kernel_path: bool,
    pub health: Arc<Health>,
}
