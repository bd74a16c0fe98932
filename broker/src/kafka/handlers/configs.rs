//! DescribeConfigs (key 32, versions 1–4) and IncrementalAlterConfigs (key 44, versions
//! 0–1) for topics. Broker resources have no dynamic configs here: they describe as an empty
//! list and cannot be altered.

use std::collections::BTreeMap;

use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    DescribeConfigsRequest, DescribeConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::ResponseError;

use super::str_bytes;
use crate::cluster::image::{topic_config_keys, validate_topic_configs};
use crate::cluster::{MetadataCommand, MetadataError};
use crate::kafka::context::KafkaContext;
use crate::kafka::errors::{metadata_error_code, propose_error_code};
use crate::log::LogConfig;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
/// ConfigSource values.
const SOURCE_TOPIC: i8 = 1;
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
    d
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
                        .map(|k| {
                            let mut c = DescribeConfigsResourceResult::default();
                            c.name = str_bytes(k);
                            let (value, source) = match topic.configs.get(k) {
                                Some(v) => (v.clone(), SOURCE_TOPIC),
                                None => (defaults.get(k).cloned().unwrap_or_default(), SOURCE_DEFAULT),
                            };
                            c.value = Some(str_bytes(&value));
                            c.config_source = source;
                            if version >= 3 {
                                c.config_type = config_type(k);
                            }
                            c
                        })
                        .collect();
                }
            },
            RESOURCE_BROKER => {}
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
        let result = if r.resource_type != RESOURCE_TOPIC {
            Err((ResponseError::InvalidRequest.code(), "only topic configs can be altered".to_string()))
        } else {
            alter_topic(ctx, r.resource_name.as_str(), &r.configs, req.validate_only).await
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
    let invalid = |m: String| (ResponseError::InvalidConfig.code(), m);
    let mut set = BTreeMap::new();
    let mut delete = Vec::new();
    let defaults = topic_defaults();
    for op in ops {
        let key = op.name.as_str().to_string();
        if !topic_config_keys().any(|k| k == key) {
            return Err(invalid(format!("unknown config key {key}")));
        }
        let value = op.value.as_ref().map(|v| v.as_str().to_string());
        match op.config_operation {
            0 => {
                set.insert(key, value.ok_or_else(|| invalid("SET needs a value".into()))?);
            }
            1 => delete.push(key),
            // APPEND / SUBTRACT apply to list configs; cleanup.policy is the only one.
            2 | 3 if config_type(&key) == TYPE_LIST => {
                let current = topic.configs.get(&key).or_else(|| defaults.get(&key)).cloned().unwrap_or_default();
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
            2 | 3 => return Err(invalid(format!("{key} is not a list config"))),
            other => return Err(invalid(format!("unknown config operation {other}"))),
        }
    }
    if validate_only {
        let mut configs = topic.configs.clone();
        for k in &delete {
            configs.remove(k);
        }
        configs.extend(set);
        return validate_topic_configs(&configs).map_err(|e: MetadataError| (metadata_error_code(&e), e.to_string()));
    }
    ctx.cluster
        .propose(MetadataCommand::AlterTopicConfig { name: name.to_string(), set, delete })
        .await
        .map_err(|e| (propose_error_code(&e), e.to_string()))
}
