//! The TCP listener: one framing and one codec for Kafka clients, Tandem clients and peers.
//!
//! Per connection, a reader decodes frames and starts each request's handling at once
//! (pipelining), while a writer sends the answers strictly in request order, as Kafka's
//! protocol requires. A frame that cannot be decoded and cannot be answered closes that
//! connection with a logged reason; every other connection goes on.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use tandem_controller::ControllerNode;
use tandem_protocol::{decode_request, error_response};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

use crate::dispatch::Answer;
use crate::node::Node;

/// Requests a connection may have in flight before the reader waits for answers.
const MAX_IN_FLIGHT: usize = 256;

/// What a connection needs to answer requests.
pub struct Services {
    pub node: Arc<Node>,
    /// This node's controller voter, if it is one.
    pub voter: Option<Arc<ControllerNode>>,
    pub max_frame_bytes: usize,
}

/// Accepts connections until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    services: Arc<Services>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream, peer, Arc::clone(&services)));
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, services: Arc<Services>) {
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, tandem_protocol::frame_codec(services.max_frame_bytes));
    let (queue, answers) = mpsc::channel::<oneshot::Receiver<Answer>>(MAX_IN_FLIGHT);
    let (immediate, immediate_answers) = mpsc::unbounded_channel::<Answer>();
    let writer = tokio::spawn(write_answers(write, answers, immediate_answers));
    let context = Arc::new(crate::dispatch::ConnectionContext::default());
    while let Some(frame) = frames.next().await {
        let frame = match frame {
            Ok(frame) => frame.freeze(),
            Err(e) => {
                warn!(%peer, error = %e, "closing the connection: bad frame");
                break;
            }
        };
        match decode_request(frame) {
            // Tandem's key is answered as soon as each answer is ready, in any order (the
            // caller matches correlation ids): a long-polled metadata fetch must not hold back
            // a heartbeat or a replica fetch on the same connection.
            Ok(request @ tandem_protocol::Request::Tandem { .. }) => {
                let services = Arc::clone(&services);
                let context = Arc::clone(&context);
                let immediate = immediate.clone();
                tokio::spawn(async move {
                    let _ =
                        immediate.send(crate::dispatch::answer(&services, &context, request).await);
                });
            }
            // Kafka's answers go back in request order, as its protocol requires.
            Ok(request) => {
                let (answer, answered) = oneshot::channel();
                let services = Arc::clone(&services);
                let context = Arc::clone(&context);
                tokio::spawn(async move {
                    let response = crate::dispatch::answer(&services, &context, request).await;
                    let _ = answer.send(response);
                });
                if queue.send(answered).await.is_err() {
                    break; // the writer is gone: the peer closed its end
                }
            }
            Err(e) => match error_response(&e) {
                Some(response) => {
                    debug!(%peer, error = %e.kind, "answering an undecodable request with an error");
                    let (answer, answered) = oneshot::channel();
                    let _ = answer.send(Answer::Frame(response));
                    if queue.send(answered).await.is_err() {
                        break;
                    }
                }
                None => {
                    warn!(%peer, error = %e.kind, api_key = ?e.api_key, "closing the connection: malformed request");
                    break;
                }
            },
        }
    }
    drop(queue);
    drop(immediate);
    let _ = writer.await;
    crate::dispatch::connection_closed(&services, &context).await;
    debug!(%peer, "connection closed");
}

async fn write_frame(out: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>, frame: &[u8]) -> bool {
    let length = frame.len() as u32;
    out.write_all(&length.to_be_bytes()).await.is_ok() && out.write_all(frame).await.is_ok()
}

/// Writes Kafka answers in order and Tandem answers as they come, flushing whenever nothing
/// else is ready so that pipelined answers share a syscall.
async fn write_answers(
    write: tokio::net::tcp::OwnedWriteHalf,
    mut ordered: mpsc::Receiver<oneshot::Receiver<Answer>>,
    mut immediate: mpsc::UnboundedReceiver<Answer>,
) {
    let mut out = BufWriter::new(write);
    let mut head: Option<oneshot::Receiver<Answer>> = None;
    let (mut ordered_open, mut immediate_open) = (true, true);
    while ordered_open || immediate_open || head.is_some() {
        tokio::select! {
            answered = async { head.as_mut().expect("guarded").await }, if head.is_some() => {
                head = None;
                match answered {
                    Ok(Answer::Frame(frame)) => {
                        if !write_frame(&mut out, &frame).await {
                            return;
                        }
                    }
                    Ok(Answer::Close) => return,
                    Ok(Answer::Nothing) | Err(_) => {}
                }
            }
            next = ordered.recv(), if head.is_none() && ordered_open => match next {
                Some(answered) => head = Some(answered),
                None => ordered_open = false,
            },
            answer = immediate.recv(), if immediate_open => match answer {
                Some(Answer::Frame(frame)) => {
                    if !write_frame(&mut out, &frame).await {
                        return;
                    }
                }
                Some(Answer::Close) => return,
                Some(Answer::Nothing) => {}
                None => immediate_open = false,
            },
        }
        let more_ready = !immediate.is_empty() || (head.is_none() && !ordered.is_empty());
        if !more_ready && out.flush().await.is_err() {
            return;
        }
    }
    let _ = out.flush().await;
}

/// Binds and logs where.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(address).await?;
    info!(address = %listener.local_addr()?, "listening");
    Ok(listener)
}
