//! The rebalancer's rounds (`rebalance_exec::round`) against three real `weir-broker` processes
//! on 127.0.0.5–7, with the StatefulSet's view (wanted replicas, ready pods) given by the test
//! instead of Kubernetes: a scale-down drains the departing broker, a scale-up clears its
//! draining mark and moves replicas back onto it, and preferred leaders are elected. The
//! rounds keep nothing between calls: what they did (their draining marks, their throttle hold)
//! is read back from the brokers, as an operator that restarted would.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::brokers::Broker;
use weir_operator::admin::{BrokerAdmin, HttpAdmin, NewTopic, PartitionInfo};
use weir_operator::rebalance::Step;
use weir_operator::rebalance_exec::{round, Mode, Throttle, OWNER};

fn ready(ids: &[i32]) -> BTreeSet<i32> {
    ids.iter().copied().collect()
}

async fn partitions(admin: &HttpAdmin) -> Vec<PartitionInfo> {
    let mut p = admin.list_partitions().await.unwrap();
    p.sort_by_key(|p| p.partition);
    p
}

/// Rounds until the plan is empty and nothing moves; returns every step executed on the way.
async fn settle(admin: &HttpAdmin, desired: i32, pods: &[i32], throttle: Throttle) -> Vec<Step> {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut executed = Vec::new();
    loop {
        let r = round(admin, desired, ready(pods), Mode::Execute, throttle).await.unwrap();
        if r.executed.iter().any(|s| matches!(s, Step::Drain { .. } | Step::Reassign { .. })) {
            // The rounds hold the throttle while their moves run; the lower value is in force.
            let t = admin.throttle_view().await.unwrap();
            assert_eq!(t.holds.get(OWNER), Some(&throttle.bytes_per_sec), "{t:?}");
            let lowest = [t.bytes_per_sec, throttle.bytes_per_sec].into_iter().filter(|v| *v > 0).min().unwrap();
            assert_eq!(t.effective_bytes_per_sec, lowest, "{t:?}");
        }
        assert!(r.refusals.is_empty(), "{:?}", r.refusals);
        executed.extend(r.executed.iter().cloned());
        if r.steps.is_empty() && r.moving == 0 {
            return executed;
        }
        assert!(
            Instant::now() < deadline,
            "no settled plan within 90 s; last round {r:?}; {} steps executed, the first ones {:?}",
            executed.len(),
            &executed[..executed.len().min(8)]
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Create a topic, retrying while the brokers are still forming their quorum.
async fn create_topic(admin: &HttpAdmin, name: &str, partitions: i32, replication_factor: i32) {
    let topic = NewTopic {
        name: name.into(),
        partitions,
        replication_factor: Some(replication_factor),
        configs: BTreeMap::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = admin.create_topic(&topic).await {
        assert!(e.is_transient() && Instant::now() < deadline, "create topic: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn replica_counts(parts: &[PartitionInfo]) -> BTreeMap<i32, usize> {
    let mut n = BTreeMap::new();
    for p in parts {
        for b in &p.replicas {
            *n.entry(*b).or_insert(0) += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_drain_a_departing_broker_and_refill_it_when_it_is_wanted_again() {
    let brokers = Broker::cluster(5, 3).await;
    let admin = brokers[0].admin();
    create_topic(&admin, "orders", 3, 2).await;
    // Wait until every partition has its leader and full ISR.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let parts = partitions(&admin).await;
        if parts.len() == 3 && parts.iter().all(|p| p.leader == p.replicas.first().copied() && p.isr.len() == 2) {
            break;
        }
        assert!(Instant::now() < deadline, "partitions not ready: {parts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = partitions(&admin).await;
    assert!(before.iter().any(|p| p.replicas.contains(&2)), "the broker's placement left broker 2 empty: {before:?}");

    // Plan mode: the scale-down is planned (broker 2 drained first) but nothing changes.
    let throttle = Throttle::new(50_000_000);
    let r = round(&admin, 2, ready(&[0, 1, 2]), Mode::Plan, throttle).await.unwrap();
    assert_eq!(r.steps.first(), Some(&Step::Drain { broker: 2 }), "{r:?}");
    assert!(r.executed.is_empty());
    assert_eq!(partitions(&admin).await, before, "plan mode changed the cluster");
    assert!(admin.list_brokers().await.unwrap().iter().all(|b| !b.draining));

    // Scale-down to two brokers: broker 2 is drained and ends with no replica and no leadership.
    let executed = settle(&admin, 2, &[0, 1, 2], throttle).await;
    assert_eq!(executed.first(), Some(&Step::Drain { broker: 2 }), "{executed:?}");
    let parts = partitions(&admin).await;
    assert!(parts.iter().all(|p| !p.replicas.contains(&2) && p.leader != Some(2)), "{parts:?}");
    assert!(parts.iter().all(|p| p.replicas.len() == 2 && p.isr.len() == 2), "replication factor kept: {parts:?}");
    let marked = admin.list_brokers().await.unwrap();
    assert!(marked.iter().any(|b| b.id == 2 && b.draining && b.draining_owner.as_deref() == Some(OWNER)), "{marked:?}");
    let t = admin.throttle_view().await.unwrap();
    assert!(t.holds.is_empty() && t.effective_bytes_per_sec == 0, "the hold is released: {t:?}");

    // Scale back up to three: the mark is cleared, replicas even out again (two per broker),
    // and every partition is led by its preferred replica.
    // The mark is known to be the operator's from the broker's metadata alone (these rounds
    // remember nothing). A throttle someone set by hand, lower than the hold, stays in force
    // during the moves and is all that is left once they are done.
    admin.set_replication_throttle(7_000_000).await.unwrap();
    let executed = settle(&admin, 3, &[0, 1, 2], throttle).await;
    assert_eq!(executed.first(), Some(&Step::Undrain { broker: 2 }), "{executed:?}");
    assert!(executed.iter().any(|s| matches!(s, Step::Reassign { .. })), "{executed:?}");
    let parts = partitions(&admin).await;
    assert_eq!(replica_counts(&parts), BTreeMap::from([(0, 2), (1, 2), (2, 2)]), "{parts:?}");
    assert!(parts.iter().all(|p| p.leader == p.replicas.first().copied() && p.isr.len() == 2), "{parts:?}");
    assert!(admin.list_brokers().await.unwrap().iter().all(|b| !b.draining));
    let t = admin.throttle_view().await.unwrap();
    assert!(t.bytes_per_sec == 7_000_000 && t.holds.is_empty() && t.effective_bytes_per_sec == 7_000_000, "{t:?}");

    // A person drains broker 1 ahead of a scale-down: the rounds leave that mark alone (they
    // did not set it) while the StatefulSet still wants the broker, and put nothing on it.
    admin.drain(1, None).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = round(&admin, 3, ready(&[0, 1, 2]), Mode::Execute, throttle).await.unwrap();
        assert!(!r.executed.iter().any(|s| matches!(s, Step::Undrain { .. })), "{r:?}");
        if r.moving == 0 && r.steps == vec![Step::DrainedByOthers { broker: 1 }] {
            break;
        }
        assert!(Instant::now() < deadline, "broker 1's own drain did not settle: {r:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let parts = partitions(&admin).await;
    assert!(parts.iter().all(|p| !p.replicas.contains(&1)), "{parts:?}");
    assert!(admin.list_brokers().await.unwrap().iter().any(|b| b.id == 1 && b.draining));

    // A hold left by an operator that stopped mid-move (here at another rate) is released by
    // the next round that has nothing to move.
    admin.hold_throttle(OWNER, 1_000_000).await.unwrap();
    assert_eq!(admin.throttle_view().await.unwrap().effective_bytes_per_sec, 1_000_000);
    round(&admin, 3, ready(&[0, 1, 2]), Mode::Execute, throttle).await.unwrap();
    let t = admin.throttle_view().await.unwrap();
    assert!(t.holds.is_empty() && t.effective_bytes_per_sec == 7_000_000, "{t:?}");
}

/// While a broker still runs an older binary (registered with metadata version 0, so the
/// brokers refuse named throttle holds with 409), the rounds drain without the hold instead of
/// failing: a scale-down is not held back by an unfinished upgrade. Brokers on 127.0.0.11–13.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rounds_move_without_the_hold_while_a_broker_reads_an_older_metadata_version() {
    let brokers = Broker::cluster_with_args(11, 3, |i| {
        if i == 2 {
            vec!["--metadata-version".into(), "0".into()]
        } else {
            Vec::new()
        }
    })
    .await;
    let admin = brokers[0].admin();
    create_topic(&admin, "upgrading", 3, 2).await;
    let refused = admin.hold_throttle("probe", 1).await.unwrap_err();
    assert_eq!(refused.code(), Some("metadata_version_too_low"), "{refused}");

    let throttle = Throttle::new(50_000_000);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = round(&admin, 2, ready(&[0, 1, 2]), Mode::Execute, throttle).await.unwrap();
        let parts = partitions(&admin).await;
        if r.steps.is_empty() && r.moving == 0 && parts.iter().all(|p| !p.replicas.contains(&2)) {
            break;
        }
        assert!(Instant::now() < deadline, "the drain did not finish: {r:?} {parts:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let t = admin.throttle_view().await.unwrap();
    assert!(t.holds.is_empty() && t.effective_bytes_per_sec == 0, "{t:?}");
    // Nor could the mark carry the operator's name: it was set without an owner.
    let marked = admin.list_brokers().await.unwrap();
    assert!(marked.iter().any(|b| b.id == 2 && b.draining && b.draining_owner.is_none()), "{marked:?}");
}

/// A drain that can move nothing (replication factor 3 on three brokers, scaled to two) is
/// asked again every round; it must not keep the throttle held meanwhile, since the hold would
/// slow every other reassignment for as long as the drain stays blocked. Brokers on
/// 127.0.0.14–16.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_drain_holds_no_throttle() {
    let brokers = Broker::cluster(14, 3).await;
    let admin = brokers[0].admin();
    create_topic(&admin, "full", 1, 3).await;
    let throttle = Throttle::new(50_000_000);
    for _ in 0..2 {
        let r = round(&admin, 2, ready(&[0, 1, 2]), Mode::Execute, throttle).await.unwrap();
        assert_eq!(r.executed, vec![Step::Drain { broker: 2 }], "{r:?}");
        assert!(r.refusals.iter().any(|m| m.contains("blocked")), "{r:?}");
        let t = admin.throttle_view().await.unwrap();
        assert!(t.holds.is_empty(), "a blocked drain left the throttle held: {t:?}");
    }
    assert!(partitions(&admin).await[0].replicas.contains(&2), "nothing could move");
}
