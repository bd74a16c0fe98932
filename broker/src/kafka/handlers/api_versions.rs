//! ApiVersions (key 18), versions 0–4. An unsupported request version is answered with
//! UNSUPPORTED_VERSION in a v0 body listing our ranges, so the client can downgrade.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader};
use kafka_protocol::ResponseError;

use super::SUPPORTED;
use crate::kafka::codec::{self, CodecError, ResponseFrame};

pub fn handle(header: &RequestHeader, mut body: Bytes) -> Result<ResponseFrame, CodecError> {
    let version = header.request_api_version;
    let (lo, hi) = super::supported_range(ApiKey::ApiVersions).expect("listed");
    let mut resp = ApiVersionsResponse::default();
    resp.api_keys = SUPPORTED
        .iter()
        .map(|(k, min, max)| {
            let mut v = ApiVersion::default();
            v.api_key = *k as i16;
            v.min_version = *min;
            v.max_version = *max;
            v
        })
        .collect();
    if !(lo..=hi).contains(&version) {
        resp.error_code = ResponseError::UnsupportedVersion.code();
        return codec::encode_response(ApiKey::ApiVersions, 0, header.correlation_id, &resp);
    }
    // The body (client software name and version, v3+) is only informational; it must parse.
    let _req: ApiVersionsRequest = codec::decode_body(&mut body, version)?;
    codec::encode_response(ApiKey::ApiVersions, version, header.correlation_id, &resp)
}
