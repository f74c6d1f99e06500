//! A minimal HTTP/1.1 GET, enough for the CLI to read a node's admin API (`/api/cluster`):
//! one request per connection (`Connection: close`), the body read to the end, chunked
//! transfer encoding understood. No TLS, no redirects.

use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest answer accepted (a cluster view of many partitions is a few MB at most).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// GETs `http://{address}{path}` and returns the body of a 200 answer.
pub async fn get(address: &str, path: &str, timeout: Duration) -> anyhow::Result<String> {
    tokio::time::timeout(timeout, get_unbounded(address, path))
        .await
        .with_context(|| format!("http://{address}{path}: no answer within {timeout:?}"))?
}

async fn get_unbounded(address: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .with_context(|| format!("cannot connect to {address}"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nAccept: */*\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    (&mut stream)
        .take(MAX_RESPONSE_BYTES as u64 + 1)
        .read_to_end(&mut response)
        .await
        .with_context(|| format!("reading the answer of {address}"))?;
    if response.len() > MAX_RESPONSE_BYTES {
        bail!("http://{address}{path}: answer larger than {MAX_RESPONSE_BYTES} bytes");
    }
    parse_response(&response).with_context(|| format!("http://{address}{path}"))
}

/// The body of a complete HTTP/1.1 response, if its status is 200.
pub fn parse_response(response: &[u8]) -> anyhow::Result<String> {
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("not an HTTP answer (no end of headers)");
    };
    let head = String::from_utf8_lossy(&response[..split]);
    let body = &response[split + 4..];
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).unwrap_or_default();
    if status != "200" {
        bail!(
            "answered {status_line:?}: {}",
            String::from_utf8_lossy(body).trim()
        );
    }
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    String::from_utf8(body).context("the answer is not UTF-8")
}

fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else {
            bail!("truncated chunked body");
        };
        let size_text = String::from_utf8_lossy(&body[..end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        body = &body[end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_200_answer_gives_its_body_plain_or_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), "{}");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), "{\"a\":1}");
    }

    #[test]
    fn other_statuses_and_garbage_are_errors() {
        let missing = b"HTTP/1.1 404 Not Found\r\n\r\nnope";
        assert!(format!("{:#}", parse_response(missing).unwrap_err()).contains("404"));
        assert!(parse_response(b"garbage").is_err());
        let truncated = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nab";
        assert!(parse_response(truncated).is_err());
    }
}
