//! Carries a rebalance plan ([`crate::rebalance::plan`]) out through the broker's admin API
//! (`docs/admin-api.md`): drains, reassignments and preferred-leader elections.
//!
//! One kind of step per round, in the plan's order (undrain, drain, reassign, elect), and
//! nothing while a reassignment is still moving data: every round plans again from what the
//! brokers report, so a step is never based on a replica list that is about to change, and a
//! round that fails half-way is simply planned again. Data moves only when the StatefulSet's
//! every wanted pod is ready (no reshuffling during a rolling restart), except drains, which a
//! scale-down needs whatever else is down.

use std::collections::{BTreeMap, BTreeSet};

use crate::admin::{AdminError, HttpAdmin};
use crate::rebalance::{plan, Brokers, Partition, Step};

/// Whether rounds carry out their plans or only report them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Drain, reassign and elect through the admin API.
    Execute,
    /// Log and count the plan; change nothing.
    Plan,
}

/// The name the operator gives itself in the broker's metadata: on the draining marks it sets
/// and on its hold of the reassignment throttle. What the rounds have done is read back from
/// there, so an operator that restarts (or a second replica taking over the lease) carries on
/// where the last one stopped.
pub const OWNER: &str = "weir-operator";

/// The reassignment throttle the rounds hold while their own moves run (`bytes_per_sec` 0:
/// none). It is a named hold (`PUT /api/v1/replication/throttle/holds/weir-operator`), not a
/// change of the cluster's own value: the throttle in force is the lowest of the two, and
/// releasing the hold once nothing moves leaves whatever a person set untouched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Throttle {
    pub bytes_per_sec: u64,
}

impl Throttle {
    pub fn new(bytes_per_sec: u64) -> Self {
        Throttle { bytes_per_sec }
    }

    async fn hold(&self, admin: &HttpAdmin) -> Result<(), AdminError> {
        admin.hold_throttle_for_moves(OWNER, self.bytes_per_sec).await
    }

    async fn release(&self, admin: &HttpAdmin) -> Result<(), AdminError> {
        admin.release_throttle_hold_if_held(OWNER).await
    }
}

/// What one round saw and did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Round {
    /// The whole plan, from the brokers' state at the start of the round.
    pub steps: Vec<Step>,
    /// The steps carried out in this round (accepted by the broker).
    pub executed: Vec<Step>,
    /// Partitions with a reassignment in progress; while any is, nothing is executed.
    pub moving: usize,
    /// Answers the broker gave to executed steps that did not take effect (`refused`,
    /// `not_in_isr`, blocked drains...), for the log.
    pub refusals: Vec<String>,
}

/// Plans from the brokers' state and the StatefulSet's `desired` replicas and `ready` pods,
/// then, in [`Mode::Execute`], carries out the first kind of step the plan holds.
pub async fn round(
    admin: &HttpAdmin,
    desired: i32,
    ready: BTreeSet<i32>,
    mode: Mode,
    throttle: Throttle,
) -> Result<Round, AdminError> {
    let infos = admin.list_partitions().await?;
    let registered = admin.list_brokers().await?;
    let racks: BTreeMap<i32, String> = registered.iter().filter_map(|b| Some((b.id, b.rack.clone()?))).collect();
    let marked: Vec<_> = registered.into_iter().filter(|b| b.draining).collect();
    let draining: BTreeSet<i32> = marked.iter().map(|b| b.id).collect();
    let drained_here: BTreeSet<i32> =
        marked.iter().filter(|b| b.draining_owner.as_deref() == Some(OWNER)).map(|b| b.id).collect();
    let min_isr: BTreeMap<String, i32> = admin
        .list_topics()
        .await?
        .into_iter()
        .filter_map(|t| t.configs.get("min.insync.replicas").and_then(|v| v.parse().ok()).map(|m| (t.name, m)))
        .collect();
    let moving = infos.iter().filter(|p| p.reassigning()).count();
    let partitions: Vec<Partition> = infos
        .into_iter()
        .map(|p| Partition {
            topic: p.topic,
            partition: p.partition,
            replicas: p.replicas,
            leader: p.leader,
            isr: p.isr,
        })
        .collect();
    let every_pod_ready = (0..desired).all(|b| ready.contains(&b));
    let brokers = Brokers { desired, ready, draining, drained_here, racks };
    let steps = plan(&brokers, &partitions, &min_isr);
    let mut round = Round { steps, moving, ..Round::default() };
    if mode == Mode::Plan || moving > 0 {
        return Ok(round);
    }
    let drain_planned = round.steps.iter().any(|s| matches!(s, Step::Drain { .. }));
    let reassign_planned = round.steps.iter().any(|s| matches!(s, Step::Reassign { .. }));
    let a_move_is_about_to_start = drain_planned || (reassign_planned && every_pod_ready);
    if !a_move_is_about_to_start {
        // Nothing moves and no round is about to start a move: the hold goes.
        throttle.release(admin).await?;
    }

    let of_kind = |f: fn(&Step) -> bool| round.steps.iter().filter(|s| f(s)).cloned().collect::<Vec<_>>();
    let undrains = of_kind(|s| matches!(s, Step::Undrain { .. }));
    let drains = of_kind(|s| matches!(s, Step::Drain { .. }));
    let reassigns = of_kind(|s| matches!(s, Step::Reassign { .. }));
    let elections = of_kind(|s| matches!(s, Step::ElectPreferred { .. }));

    if !undrains.is_empty() {
        for step in undrains {
            if let Step::Undrain { broker } = step {
                admin.undrain(broker).await?;
                round.executed.push(step);
            }
        }
    } else if !drains.is_empty() {
        // The hold follows the drains' answers: a drain that only finds blocked partitions
        // (asked again every round, maybe for good) moves nothing and holds nothing.
        let mut started = false;
        for step in drains {
            if let Step::Drain { broker } = step {
                let status = match admin.drain(broker, Some(OWNER)).await {
                    // A broker still on an older binary could not record the owner: drain
                    // without it (the mark then counts as someone else's, see operator.md).
                    Err(e) if e.code() == Some("metadata_version_too_low") => {
                        tracing::warn!(broker, error = %e, "draining without an owner until every broker is upgraded");
                        admin.drain(broker, None).await?
                    }
                    other => other?,
                };
                started |= !status.started.is_empty();
                for b in &status.blocked {
                    round.refusals.push(format!("drain of broker {broker}: blocked {b}"));
                }
                round.executed.push(step);
            }
        }
        if started {
            throttle.hold(admin).await?;
        } else {
            throttle.release(admin).await?;
        }
    } else if !reassigns.is_empty() && every_pod_ready {
        throttle.hold(admin).await?;
        let targets: Vec<(String, i32, Vec<i32>)> = reassigns
            .iter()
            .filter_map(|s| match s {
                Step::Reassign { topic, partition, replicas } => Some((topic.clone(), *partition, replicas.clone())),
                _ => None,
            })
            .collect();
        for o in admin.reassign(&targets).await? {
            if o.outcome == "refused" {
                round.refusals.push(format!("reassign {}-{}: {}", o.topic, o.partition, o.message.unwrap_or_default()));
            }
        }
        round.executed.extend(reassigns);
    } else if !elections.is_empty() {
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for s in &elections {
            if let Step::ElectPreferred { topic, partition, .. } = s {
                by_topic.entry(topic.clone()).or_default().push(*partition);
            }
        }
        for (topic, partitions) in by_topic {
            for o in admin.elect_preferred(&topic, &partitions).await? {
                if o.outcome != "elected" && o.outcome != "already_leader" {
                    round.refusals.push(format!("elect {}-{}: {}", o.topic, o.partition, o.outcome));
                }
            }
        }
        round.executed.extend(elections);
    }
    Ok(round)
}
