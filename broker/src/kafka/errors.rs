//! Log and metadata errors turned into Kafka error codes, at the protocol edge.

use kafka_protocol::ResponseError;

use crate::cluster::{MetadataError, ProposeError};
use crate::log::LogError;

pub fn log_error_code(e: &LogError) -> i16 {
    match e {
        LogError::CorruptRecord(_) => ResponseError::CorruptMessage.code(),
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange.code(),
        LogError::RecordTooLarge { .. } => ResponseError::MessageTooLarge.code(),
        LogError::InvalidTimestamp { .. } => ResponseError::InvalidTimestamp.code(),
        LogError::InvalidConfig { .. } => ResponseError::InvalidConfig.code(),
        LogError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber.code(),
        LogError::ProducerFenced { .. } => ResponseError::InvalidProducerEpoch.code(),
        LogError::Deleted { .. } => ResponseError::NotLeaderOrFollower.code(),
        LogError::Io { .. } => ResponseError::KafkaStorageError.code(),
    }
}

pub fn metadata_error_code(e: &MetadataError) -> i16 {
    match e {
        MetadataError::TopicExists(_) => ResponseError::TopicAlreadyExists.code(),
        MetadataError::UnknownTopic(_) | MetadataError::UnknownPartition { .. } => {
            ResponseError::UnknownTopicOrPartition.code()
        }
        MetadataError::InvalidTopicName(_) => ResponseError::InvalidTopicException.code(),
        MetadataError::InvalidPartitions(_) => ResponseError::InvalidPartitions.code(),
        MetadataError::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor.code(),
        MetadataError::InvalidReplicaAssignment(_) | MetadataError::UnknownBroker(_) => {
            ResponseError::InvalidReplicaAssignment.code()
        }
        MetadataError::InvalidConfig(_) => ResponseError::InvalidConfig.code(),
        MetadataError::StalePartitionEpoch { .. } | MetadataError::InvalidPartitionChange(_) => {
            ResponseError::InvalidRequest.code()
        }
        // AMQP entities never reach a Kafka answer.
        MetadataError::UnknownVhost(_)
        | MetadataError::UnknownExchange(_)
        | MetadataError::UnknownQueue(_)
        | MetadataError::UnknownBinding(_)
        | MetadataError::InequivalentArguments(_)
        | MetadataError::AccessRefused(_)
        | MetadataError::InvalidName(_) => ResponseError::InvalidRequest.code(),
        // A broker config change (version 2) while an older broker is still live.
        MetadataError::MetadataVersionTooLow { .. } => ResponseError::UnsupportedVersion.code(),
    }
}

pub fn propose_error_code(e: &ProposeError) -> i16 {
    match e {
        ProposeError::Metadata(m) => metadata_error_code(m),
        ProposeError::Unavailable(_) => ResponseError::RequestTimedOut.code(),
    }
}
