//! SASL mechanisms of connection.start-ok: PLAIN and AMQPLAIN, checked against the broker's
//! users. `guest` is refused from non-loopback addresses unless configured otherwise.

use std::net::IpAddr;

use amq_protocol::types::AMQPValue;

use super::broker::AmqpConfig;
use crate::routing::headers::value_str;

pub const MECHANISMS: &str = "PLAIN AMQPLAIN";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("unsupported authentication mechanism '{0}'")]
    UnsupportedMechanism(String),
    #[error("malformed {0} response")]
    Malformed(&'static str),
    #[error("Login was refused using authentication mechanism {0}. For details see the broker logfile.")]
    Refused(String),
    #[error("user 'guest' can only connect via localhost")]
    GuestNotLoopback,
}

/// The (user, password) of a start-ok response.
pub fn credentials(mechanism: &str, response: &[u8]) -> Result<(String, String), AuthError> {
    match mechanism {
        "PLAIN" => {
            // [authzid] NUL authcid NUL passwd
            let parts: Vec<&[u8]> = response.split(|b| *b == 0).collect();
            if parts.len() != 3 {
                return Err(AuthError::Malformed("PLAIN"));
            }
            let s = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| AuthError::Malformed("PLAIN"));
            Ok((s(parts[1])?, s(parts[2])?))
        }
        "AMQPLAIN" => {
            // A field table without its length prefix.
            let mut framed = (response.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(response);
            let (_, table) = amq_protocol::types::parsing::parse_field_table(&framed[..])
                .map_err(|_| AuthError::Malformed("AMQPLAIN"))?;
            let get = |k: &str| table.inner().get(k).and_then(|v: &AMQPValue| value_str(v));
            match (get("LOGIN"), get("PASSWORD")) {
                (Some(u), Some(p)) => Ok((u, p)),
                _ => Err(AuthError::Malformed("AMQPLAIN")),
            }
        }
        other => Err(AuthError::UnsupportedMechanism(other.to_string())),
    }
}

/// Authenticate a start-ok; returns the user name.
pub fn authenticate(config: &AmqpConfig, mechanism: &str, response: &[u8], peer: IpAddr) -> Result<String, AuthError> {
    let (user, password) = credentials(mechanism, response)?;
    if config.users.get(&user).is_none_or(|p| *p != password) {
        return Err(AuthError::Refused(mechanism.to_string()));
    }
    if user == "guest" && config.guest_loopback_only && !peer.is_loopback() {
        return Err(AuthError::GuestNotLoopback);
    }
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_amqplain() {
        let config = AmqpConfig::default();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(authenticate(&config, "PLAIN", b"\0guest\0guest", lo).unwrap(), "guest");
        assert!(matches!(authenticate(&config, "PLAIN", b"\0guest\0nope", lo), Err(AuthError::Refused(_))));
        assert!(matches!(
            authenticate(&config, "PLAIN", b"\0guest\0guest", "10.0.0.1".parse().unwrap()),
            Err(AuthError::GuestNotLoopback)
        ));
        // LOGIN S "guest", PASSWORD S "guest"
        let mut t = Vec::new();
        for (k, v) in [("LOGIN", "guest"), ("PASSWORD", "guest")] {
            t.push(k.len() as u8);
            t.extend_from_slice(k.as_bytes());
            t.push(b'S');
            t.extend_from_slice(&(v.len() as u32).to_be_bytes());
            t.extend_from_slice(v.as_bytes());
        }
        assert_eq!(authenticate(&config, "AMQPLAIN", &t, lo).unwrap(), "guest");
        assert!(matches!(authenticate(&config, "EXTERNAL", b"", lo), Err(AuthError::UnsupportedMechanism(_))));
    }
}
