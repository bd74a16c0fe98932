//! DescribeConfigs (key 32, versions 1–4), AlterConfigs (key 33, versions 0–2) and
//! IncrementalAlterConfigs (key 44, versions 0–1) for topics and brokers. The only dynamic
//! broker configs are Kafka's replication throttle rates (`cluster/throttle_configs.rs`); a
//! broker resource is a broker id, or "" for every broker's default, and any broker answers
//! for any of them (the values live in the metadata quorum).

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse as AlterConfigsResponseEntry;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::cluster::image::{topic_config_keys, MetadataImage};
use crate::cluster::throttle_configs::{self, BROKER_RATE_KEYS, TOPIC_REPLICA_LIST_KEYS, UNTHROTTLED_RATE};
use crate::cluster::MetadataCommand;
use crate::kafka::context::KafkaContext;
use crate::kafka::errors::{metadata_error_code, propose_error_code};
use crate::log::LogConfig;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
/// ConfigSource values.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DYNAMIC_BROKER: i8 = 2;
const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
const SOURCE_DEFAULT: i8 = 5;
/// ConfigType values (v3+).
const TYPE_BOOLEAN: i8 = 1;
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

fn config_type(key: &str) -> i8 {
    match key {
        "cleanup.policy" => TYPE_LIST,
        k if TOPIC_REPLICA_LIST_KEYS.contains(&k) => TYPE_LIST,
        "message.timestamp.type" => TYPE_STRING,
        "unclean.leader.election.enable" => TYPE_BOOLEAN,
        "segment.bytes"
        | "segment.index.bytes"
        | "index.interval.bytes"
        | "max.message.bytes"
        | "min.insync.replicas" => TYPE_INT,
        _ => TYPE_LONG,
    }
}

/// The broker-level default of every topic config key.
pub fn topic_defaults() -> BTreeMap<String, String> {
    let mut d = LogConfig::default().to_props();
    d.insert("min.insync.replicas".into(), "1".into());
    d.insert("unclean.leader.election.enable".into(), "false".into());
    for k in TOPIC_REPLICA_LIST_KEYS {
        d.insert(k.to_string(), String::new());
    }
    d
}

fn config_entry(name: &str, value: &str, source: i8, version: i16) -> DescribeConfigsResourceResult {
    let mut c = DescribeConfigsResourceResult::default();
    c.name = str_bytes(name);
    c.value = Some(str_bytes(value));
    c.config_source = source;
    if version >= 3 {
        c.config_type = config_type(name);
    }
    c
}

/// A broker resource's dynamic configs: for a broker id the throttle rates in force there
/// (its own, the default's, or Kafka's default, no throttle); for "" the defaults set.
fn describe_broker(
    image: &MetadataImage,
    resource: &str,
    wanted: impl Fn(&str) -> bool,
    version: i16,
) -> Result<Vec<DescribeConfigsResourceResult>, String> {
    let broker = throttle_configs::validate_broker_resource(resource).map_err(|e| e.to_string())?;
    let keys = BROKER_RATE_KEYS.iter().copied().filter(|k| wanted(k));
    Ok(match broker {
        None => {
            let defaults = image.broker_configs.get("");
            keys.filter_map(|k| defaults?.get(k).map(|v| config_entry(k, v, SOURCE_DYNAMIC_DEFAULT_BROKER, version)))
                .collect()
        }
        Some(id) => keys
            .map(|k| match image.broker_config(id, k) {
                Some((v, false)) => config_entry(k, v, SOURCE_DYNAMIC_BROKER, version),
                Some((v, true)) => config_entry(k, v, SOURCE_DYNAMIC_DEFAULT_BROKER, version),
                None => config_entry(k, UNTHROTTLED_RATE, SOURCE_DEFAULT, version),
            })
            .collect(),
    })
}

pub async fn describe(ctx: &KafkaContext, req: DescribeConfigsRequest, version: i16) -> DescribeConfigsResponse {
    let image = ctx.cluster.image();
    let defaults = topic_defaults();
    let mut results = Vec::with_capacity(req.resources.len());
    for r in &req.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = r.resource_type;
        out.resource_name = r.resource_name.clone();
        let wanted = |k: &str| r.configuration_keys.as_ref().is_none_or(|keys| keys.iter().any(|x| x.as_str() == k));
        match r.resource_type {
            RESOURCE_TOPIC => match image.topics.get(r.resource_name.as_str()) {
                None => {
                    out.error_code = ResponseError::UnknownTopicOrPartition.code();
                    out.error_message =
                        Some(str_bytes(&format!("topic '{}' does not exist", r.resource_name.as_str())));
                }
                Some(topic) => {
                    out.configs = topic_config_keys()
                        .filter(|k| wanted(k))
                        .map(|k| match topic.configs.get(k) {
                            Some(v) => config_entry(k, v, SOURCE_TOPIC, version),
                            None => {
                                config_entry(k, defaults.get(k).map_or("", |v| v.as_str()), SOURCE_DEFAULT, version)
                            }
                        })
                        .collect();
                }
            },
            RESOURCE_BROKER => match describe_broker(&image, r.resource_name.as_str(), wanted, version) {
                Ok(configs) => out.configs = configs,
                Err(message) => {
                    out.error_code = ResponseError::InvalidRequest.code();
                    out.error_message = Some(str_bytes(&message));
                }
            },
            other => {
                out.error_code = ResponseError::InvalidRequest.code();
                out.error_message = Some(str_bytes(&format!("resource type {other} is not served")));
            }
        }
        results.push(out);
    }
    let mut resp = DescribeConfigsResponse::default();
    resp.results = results;
    resp
}

pub async fn incremental_alter(
    ctx: &KafkaContext,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in &req.resources {
        let mut out = AlterConfigsResourceResponse::default();
        out.resource_type = r.resource_type;
        out.resource_name = r.resource_name.clone();
        let result = match r.resource_type {
            RESOURCE_TOPIC => alter_topic(ctx, r.resource_name.as_str(), &r.configs, req.validate_only).await,
            RESOURCE_BROKER => alter_broker(ctx, r.resource_name.as_str(), &r.configs, req.validate_only).await,
            other => Err((ResponseError::InvalidRequest.code(), format!("resource type {other} cannot be altered"))),
        };
        if let Err((code, message)) = result {
            out.error_code = code;
            out.error_message = Some(str_bytes(&message));
        }
        responses.push(out);
    }
    let mut resp = IncrementalAlterConfigsResponse::default();
    resp.responses = responses;
    resp
}

async fn alter_topic(
    ctx: &KafkaContext,
    name: &str,
    ops: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
    validate_only: bool,
) -> Result<(), (i16, String)> {
    let image = ctx.cluster.image();
    let topic = image
        .topics
        .get(name)
        .ok_or_else(|| (ResponseError::UnknownTopicOrPartition.code(), format!("topic '{name}' does not exist")))?;
    if let Some(op) = ops.iter().find(|op| !topic_config_keys().any(|k| k == op.name.as_str())) {
        return Err((ResponseError::InvalidConfig.code(), format!("unknown config key {}", op.name.as_str())));
    }
    let defaults = topic_defaults();
    let (set, delete) = parse_incremental_ops(ops, |key| {
        (config_type(key) == TYPE_LIST)
            .then(|| topic.configs.get(key).or_else(|| defaults.get(key)).cloned().unwrap_or_default())
    })?;
    change(ctx, MetadataCommand::AlterTopicConfig { name: name.to_string(), set, delete }, validate_only).await
}

/// Keys to set (with their values) and keys to delete.
type ConfigChanges = (BTreeMap<String, String>, Vec<String>);

/// IncrementalAlterConfigs' operations as the keys to set and to delete: SET (0), DELETE (1),
/// and APPEND (2) / SUBTRACT (3) on list configs, for which `list_value` gives the current
/// comma-separated value (None: the key is not a list). A refused operation is INVALID_CONFIG.
fn parse_incremental_ops(
    ops: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
    list_value: impl Fn(&str) -> Option<String>,
) -> Result<ConfigChanges, (i16, String)> {
    let invalid = |m: String| (ResponseError::InvalidConfig.code(), m);
    let mut set = BTreeMap::new();
    let mut delete = Vec::new();
    for op in ops {
        let key = op.name.as_str().to_string();
        let value = op.value.as_ref().map(|v| v.as_str());
        match op.config_operation {
            0 => {
                set.insert(key.clone(), value.ok_or_else(|| invalid(format!("SET {key} needs a value")))?.to_string());
            }
            1 => delete.push(key),
            2 | 3 => {
                let current = list_value(&key).ok_or_else(|| invalid(format!("{key} is not a list config")))?;
                let mut items: Vec<String> =
                    current.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
                for v in value.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if op.config_operation == 2 && !items.iter().any(|i| i == v) {
                        items.push(v.to_string());
                    } else if op.config_operation == 3 {
                        items.retain(|i| i != v);
                    }
                }
                set.insert(key, items.join(","));
            }
            other => return Err(invalid(format!("unknown config operation {other}"))),
        }
    }
    Ok((set, delete))
}

/// Commit one config change, or with `validate_only` check it as the state machine would
/// (applied to a copy of the image) and keep nothing.
async fn change(ctx: &KafkaContext, cmd: MetadataCommand, validate_only: bool) -> Result<(), (i16, String)> {
    if validate_only {
        let mut image = MetadataImage::clone(&ctx.cluster.image());
        return image.apply(&cmd).map_err(|e| (metadata_error_code(&e), e.to_string()));
    }
    ctx.cluster.propose(cmd).await.map_err(|e| (propose_error_code(&e), e.to_string()))
}

/// SET and DELETE of the replication throttle rates on a broker resource. An invalid
/// resource name is INVALID_REQUEST, as in Kafka; a key or value refused is INVALID_CONFIG.
async fn alter_broker(
    ctx: &KafkaContext,
    resource: &str,
    ops: &[kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig],
    validate_only: bool,
) -> Result<(), (i16, String)> {
    throttle_configs::validate_broker_resource(resource)
        .map_err(|e| (ResponseError::InvalidRequest.code(), e.to_string()))?;
    // No broker config is a list: APPEND and SUBTRACT are refused.
    let (set, delete) = parse_incremental_ops(ops, |_| None)?;
    change(ctx, MetadataCommand::AlterBrokerConfig { resource: resource.to_string(), set, delete }, validate_only).await
}

/// AlterConfigs (key 33, versions 0–2), the call before IncrementalAlterConfigs, still what
/// some clients send (Sarama's `AlterConfig`, kafka-python with `incremental=False`): the
/// given entries become the resource's whole set of dynamic configs, and every other one
/// returns to its default. An entry without a value counts as absent.
pub async fn alter(ctx: &KafkaContext, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in &req.resources {
        let mut out = AlterConfigsResponseEntry::default();
        out.resource_type = r.resource_type;
        out.resource_name = r.resource_name.clone();
        let name = r.resource_name.as_str();
        let set: BTreeMap<String, String> = r
            .configs
            .iter()
            .filter_map(|c| Some((c.name.as_str().to_string(), c.value.as_ref()?.as_str().to_string())))
            .collect();
        let image = ctx.cluster.image();
        let result = match r.resource_type {
            RESOURCE_TOPIC => match image.topics.get(name) {
                None => Err((ResponseError::UnknownTopicOrPartition.code(), format!("topic '{name}' does not exist"))),
                Some(topic) => {
                    if let Some(k) = set.keys().find(|k| !topic_config_keys().any(|known| known == k.as_str())) {
                        Err((ResponseError::InvalidConfig.code(), format!("unknown config key {k}")))
                    } else {
                        let delete = topic.configs.keys().filter(|k| !set.contains_key(*k)).cloned().collect();
                        let cmd = MetadataCommand::AlterTopicConfig { name: name.to_string(), set, delete };
                        change(ctx, cmd, req.validate_only).await
                    }
                }
            },
            RESOURCE_BROKER => match throttle_configs::validate_broker_resource(name) {
                Err(e) => Err((ResponseError::InvalidRequest.code(), e.to_string())),
                Ok(_) => {
                    let current = image.broker_configs.get(name);
                    let delete = current
                        .map(|c| c.keys().filter(|k| !set.contains_key(*k)).cloned().collect())
                        .unwrap_or_default();
                    let cmd = MetadataCommand::AlterBrokerConfig { resource: name.to_string(), set, delete };
                    change(ctx, cmd, req.validate_only).await
                }
            },
            other => Err((ResponseError::InvalidRequest.code(), format!("resource type {other} cannot be altered"))),
        };
        if let Err((code, message)) = result {
            out.error_code = code;
            out.error_message = Some(str_bytes(&message));
        }
        responses.push(out);
    }
    let mut resp = AlterConfigsResponse::default();
    resp.responses = responses;
    resp
}
