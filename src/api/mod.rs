//! The daemon's JSON API on a unix socket: its wire types ([`wire`]) and the small
//! client `obsctl` uses.
//!
//! Paths: `GET /v1/status`, `GET /v1/jobs`, `POST /v1/jobs/{name}/run[?wait=true]`,
//! `POST /v1/reconcile`. The socket is created with mode 0600 (0660 with a group), so
//! file permissions are the access control.

pub mod wire;

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The socket path inside a state directory.
pub fn socket_in(state_dir: &Path) -> PathBuf {
    state_dir.join("obsd.sock")
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach obsd at {path}: {source} (is the daemon running? `systemctl status obsd`)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to obsd at {path}: {message}")]
    Protocol { path: PathBuf, message: String },
    /// The daemon answered with an error status.
    #[error("obsd answered {status}: {message}")]
    Api { status: u16, message: String },
}

/// One request, its answer decoded as `T`; a non-200 answer is [`ClientError::Api`]
/// with the daemon's message.
pub async fn call<T: DeserializeOwned>(
    socket: &Path,
    method: &str,
    path: &str,
) -> Result<T, ClientError> {
    let (status, body) = request(socket, method, path).await?;
    if status != 200 {
        let message = serde_json::from_str::<wire::ApiError>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| body.trim().to_string());
        return Err(ClientError::Api { status, message });
    }
    serde_json::from_str(&body).map_err(|e| ClientError::Protocol {
        path: socket.to_path_buf(),
        message: format!("unexpected answer to {path}: {e}"),
    })
}

/// One HTTP/1.1 request over the unix socket; returns status and body.
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
) -> Result<(u16, String), ClientError> {
    let proto = |message: String| ClientError::Protocol {
        path: socket.to_path_buf(),
        message,
    };
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            path: socket.to_path_buf(),
            source,
        })?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: obsd\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| proto(e.to_string()))?;
    let mut buf = Vec::new();
    stream
        .read_to_end(&mut buf)
        .await
        .map_err(|e| proto(e.to_string()))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| proto("malformed response".into()))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| proto("malformed status line".into()))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}
