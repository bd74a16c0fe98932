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

/// The reassignment throttle the rounds hold while their own moves run: `bytes_per_sec` 0
/// leaves the cluster's throttle alone. Before a drain or a reassignment the cluster's value is
/// saved and replaced; once nothing moves any more it is put back, unless someone changed it
/// meanwhile. The saved value lives in memory: an operator restarted mid-move leaves the
/// throttle at `bytes_per_sec` (it only ever slows reassignments, never clients).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Throttle {
    pub bytes_per_sec: u64,
    saved: Option<u64>,
}

impl Throttle {
    pub fn new(bytes_per_sec: u64) -> Self {
        Throttle { bytes_per_sec, saved: None }
    }

    async fn hold(&mut self, admin: &HttpAdmin) -> Result<(), AdminError> {
        if self.bytes_per_sec == 0 || self.saved.is_some() {
            return Ok(());
        }
        let current = admin.replication_throttle().await?;
        if current != self.bytes_per_sec {
            admin.set_replication_throttle(self.bytes_per_sec).await?;
        }
        self.saved = Some(current);
        Ok(())
    }

    async fn release(&mut self, admin: &HttpAdmin) -> Result<(), AdminError> {
        let Some(saved) = self.saved else { return Ok(()) };
        if admin.replication_throttle().await? == self.bytes_per_sec && saved != self.bytes_per_sec {
            admin.set_replication_throttle(saved).await?;
        }
        self.saved = None;
        Ok(())
    }
}

/// What the rounds remember from one to the next, in memory only (an operator that restarts
/// starts empty): the throttle they hold, and the brokers they drained, whose draining marks
/// are the only ones they clear when the StatefulSet wants those brokers again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    pub throttle: Throttle,
    pub drained: BTreeSet<i32>,
}

impl Memory {
    pub fn new(throttle: Throttle) -> Self {
        Memory { throttle, drained: BTreeSet::new() }
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
    memory: &mut Memory,
) -> Result<Round, AdminError> {
    let infos = admin.list_partitions().await?;
    let draining: BTreeSet<i32> =
        admin.list_brokers().await?.into_iter().filter(|b| b.draining).map(|b| b.id).collect();
    let min_isr: BTreeMap<String, i32> = admin
        .list_topics()
        .await?
        .into_iter()
        .filter_map(|t| t.configs.get("min.insync.replicas").and_then(|v| v.parse().ok()).map(|m| (t.name, m)))
        .collect();
    let moving = infos.iter().filter(|p| !p.adding.is_empty() || !p.removing.is_empty()).count();
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
    let brokers = Brokers { desired, ready, draining, drained_here: memory.drained.clone() };
    let steps = plan(&brokers, &partitions, &min_isr);
    let mut round = Round { steps, moving, ..Round::default() };
    if mode == Mode::Plan || moving > 0 {
        return Ok(round);
    }
    let drain_planned = round.steps.iter().any(|s| matches!(s, Step::Drain { .. }));
    let reassign_planned = round.steps.iter().any(|s| matches!(s, Step::Reassign { .. }));
    if !drain_planned && !(reassign_planned && every_pod_ready) {
        // Nothing moves and no round is about to start a move: the cluster's throttle back.
        memory.throttle.release(admin).await?;
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
                memory.drained.remove(&broker);
                round.executed.push(step);
            }
        }
    } else if !drains.is_empty() {
        memory.throttle.hold(admin).await?;
        for step in drains {
            if let Step::Drain { broker } = step {
                let status = admin.drain(broker).await?;
                memory.drained.insert(broker);
                for b in &status.blocked {
                    round.refusals.push(format!("drain of broker {broker}: blocked {b}"));
                }
                round.executed.push(step);
            }
        }
    } else if !reassigns.is_empty() && every_pod_ready {
        memory.throttle.hold(admin).await?;
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
