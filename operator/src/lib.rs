//! The Weir operator: reconciles `Topic`, `Queue`, `Exchange` and `Binding` resources
//! (`weir.dev/v1alpha1`) against a broker cluster's admin API, and plans partition rebalancing
//! as broker pods come and go.

pub mod admin;
pub mod binding;
pub mod conditions;
pub mod controller;
pub mod exchange;
pub mod leader;
pub mod metrics;
pub mod queue;
pub mod rebalance;
pub mod rebalance_exec;
pub mod rebalance_watch;
pub mod resolver;
pub mod sync;
pub mod topic;
