//! quinn's connection and streams as the QUIC transport h3 runs on, handing response
//! bodies to quinn without copying them.
//!
//! h3 gives the transport each frame as a `WriteBuf` that lends its payload only as
//! `&[u8]`, and h3-quinn copies that slice into quinn's send buffer: one more copy of
//! every thumbnail, besides the one into packets that sealing needs (the largest user-space
//! cost of HTTP/3 against HTTP/2 in `bench/serving`'s profile). Here `send_body` publishes
//! the body it sends for the length of each poll, and a frame's payload that lies inside it
//! goes to quinn as a slice of that `Bytes` (`write_chunks`). Anything else (frame headers,
//! HEADERS blocks, h3's control streams) is copied as before.
//!
//! Stream reads and writes make quinn's future afresh on each poll (`write_chunks`,
//! `read_chunk`): quinn keeps the waker of a blocked stream in the connection's state, so
//! nothing is boxed and no stream is ever held by a future in flight.

use std::cell::RefCell;
use std::future::Future as _;
use std::pin::pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use ::h3::error::Code;
use ::h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};
use ::h3::server::RequestStream;
use bytes::{Buf, Bytes, BytesMut};
use quinn::VarInt;
use tokio_util::sync::ReusableBoxFuture;

/// A QUIC connection as h3 sees it; also its own stream opener.
pub(super) struct Connection {
    connection: quinn::Connection,
    accepting_bidi: Option<Waiting<(quinn::SendStream, quinn::RecvStream)>>,
    accepting_uni: Option<Waiting<quinn::RecvStream>>,
    opening_bidi: Option<Waiting<(quinn::SendStream, quinn::RecvStream)>>,
    opening_uni: Option<Waiting<quinn::SendStream>>,
}

/// quinn's `accept_*` and `open_*` futures wait on a `Notify`, which wakes only futures
/// still alive: each is kept across polls, the next one in the same allocation.
type Waiting<T> = ReusableBoxFuture<'static, Waited<T>>;
/// What a wait gives back: the connection, for the next wait, and its outcome.
type Waited<T> = (quinn::Connection, Result<T, quinn::ConnectionError>);

impl Connection {
    pub(super) fn new(connection: quinn::Connection) -> Self {
        Self { connection, accepting_bidi: None, accepting_uni: None, opening_bidi: None, opening_uni: None }
    }
}

impl Clone for Connection {
    fn clone(&self) -> Self {
        Self::new(self.connection.clone())
    }
}

/// Polls the wait in `slot` (started by `start` on first use) and starts the next.
fn poll_waiting<T, F>(
    slot: &mut Option<Waiting<T>>,
    connection: &quinn::Connection,
    start: fn(quinn::Connection) -> F,
    cx: &mut Context<'_>,
) -> Poll<Result<T, quinn::ConnectionError>>
where
    F: std::future::Future<Output = Waited<T>> + Send + 'static,
{
    let waiting = slot.get_or_insert_with(|| ReusableBoxFuture::new(start(connection.clone())));
    let (connection, result) = ready!(waiting.poll(cx));
    waiting.set(start(connection));
    Poll::Ready(result)
}

async fn accept_bidi(connection: quinn::Connection) -> Waited<(quinn::SendStream, quinn::RecvStream)> {
    let accepted = connection.accept_bi().await;
    (connection, accepted)
}

async fn accept_uni(connection: quinn::Connection) -> Waited<quinn::RecvStream> {
    let accepted = connection.accept_uni().await;
    (connection, accepted)
}

async fn open_bidi(connection: quinn::Connection) -> Waited<(quinn::SendStream, quinn::RecvStream)> {
    let opened = connection.open_bi().await;
    (connection, opened)
}

async fn open_uni(connection: quinn::Connection) -> Waited<quinn::SendStream> {
    let opened = connection.open_uni().await;
    (connection, opened)
}

impl<B: Buf> quic::Connection<B> for Connection {
    type RecvStream = RecvStream;
    type OpenStreams = Connection;

    fn poll_accept_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<RecvStream, ConnectionErrorIncoming>> {
        let recv = ready!(poll_waiting(&mut self.accepting_uni, &self.connection, accept_uni, cx))
            .map_err(connection_error)?;
        Poll::Ready(Ok(RecvStream(recv)))
    }

    fn poll_accept_bidi(&mut self, cx: &mut Context<'_>) -> Poll<Result<BidiStream, ConnectionErrorIncoming>> {
        let (send, recv) = ready!(poll_waiting(&mut self.accepting_bidi, &self.connection, accept_bidi, cx))
            .map_err(connection_error)?;
        Poll::Ready(Ok(BidiStream { send: SendStream::new(send), recv: RecvStream(recv) }))
    }

    fn opener(&self) -> Connection {
        self.clone()
    }
}

impl<B: Buf> quic::OpenStreams<B> for Connection {
    type BidiStream = BidiStream;
    type SendStream = SendStream;

    fn poll_open_bidi(&mut self, cx: &mut Context<'_>) -> Poll<Result<BidiStream, StreamErrorIncoming>> {
        let (send, recv) = ready!(poll_waiting(&mut self.opening_bidi, &self.connection, open_bidi, cx))
            .map_err(stream_connection_error)?;
        Poll::Ready(Ok(BidiStream { send: SendStream::new(send), recv: RecvStream(recv) }))
    }

    fn poll_open_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<SendStream, StreamErrorIncoming>> {
        let send = ready!(poll_waiting(&mut self.opening_uni, &self.connection, open_uni, cx))
            .map_err(stream_connection_error)?;
        Poll::Ready(Ok(SendStream::new(send)))
    }

    fn close(&mut self, code: Code, reason: &[u8]) {
        self.connection.close(VarInt::from_u64(code.value()).unwrap_or(VarInt::MAX), reason);
    }
}

/// A request stream: the request comes in on `recv`, the response goes out on `send`.
pub(super) struct BidiStream {
    send: SendStream,
    recv: RecvStream,
}

impl<B: Buf> quic::BidiStream<B> for BidiStream {
    type SendStream = SendStream;
    type RecvStream = RecvStream;

    fn split(self) -> (SendStream, RecvStream) {
        (self.send, self.recv)
    }
}

impl<B: Buf> quic::SendStream<B> for BidiStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        quic::SendStream::<B>::poll_ready(&mut self.send, cx)
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        quic::SendStream::<B>::poll_finish(&mut self.send, cx)
    }

    fn reset(&mut self, reset_code: u64) {
        quic::SendStream::<B>::reset(&mut self.send, reset_code);
    }

    fn send_id(&self) -> StreamId {
        quic::SendStream::<B>::send_id(&self.send)
    }
}

impl quic::RecvStream for BidiStream {
    type Buf = Bytes;

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code);
    }

    fn recv_id(&self) -> StreamId {
        self.recv.recv_id()
    }
}

/// A stream's sending half, with the frame h3 last gave it until quinn has taken it all.
pub(super) struct SendStream {
    stream: quinn::SendStream,
    /// The frame in pieces (see `pieces`); those before `taken` are in quinn's buffer.
    pieces: Vec<Bytes>,
    taken: usize,
}

impl SendStream {
    fn new(stream: quinn::SendStream) -> Self {
        Self { stream, pieces: Vec::new(), taken: 0 }
    }
}

impl<B: Buf> quic::SendStream<B> for SendStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        while self.taken < self.pieces.len() {
            // quinn takes whole pieces and splits a partly taken one in place; a write
            // that does not complete took nothing.
            let write = pin!(self.stream.write_chunks(&mut self.pieces[self.taken..]));
            let written = ready!(write.poll(cx)).map_err(write_error)?;
            self.taken += written.chunks;
        }
        self.pieces.clear();
        self.taken = 0;
        Poll::Ready(Ok(()))
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        if self.taken < self.pieces.len() {
            // h3 waits for `poll_ready` between frames; anything else is a bug in h3.
            return Err(StreamErrorIncoming::ConnectionErrorIncoming {
                connection_error: ConnectionErrorIncoming::InternalError("a frame sent before the last one".into()),
            });
        }
        LENT_BODY.with(|lent| self.pieces = pieces(data.into(), lent.borrow().as_ref()));
        self.taken = 0;
        Ok(())
    }

    fn poll_finish(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        Poll::Ready(self.stream.finish().map_err(|error| StreamErrorIncoming::Unknown(Box::new(error))))
    }

    fn reset(&mut self, reset_code: u64) {
        let _ = self.stream.reset(VarInt::from_u64(reset_code).unwrap_or(VarInt::MAX));
    }

    fn send_id(&self) -> StreamId {
        stream_id(self.stream.id())
    }
}

/// A stream's receiving half.
pub(super) struct RecvStream(quinn::RecvStream);

impl quic::RecvStream for RecvStream {
    type Buf = Bytes;

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        let chunk = ready!(pin!(self.0.read_chunk(usize::MAX, true)).poll(cx)).map_err(read_error)?;
        Poll::Ready(Ok(chunk.map(|chunk| chunk.bytes)))
    }

    fn stop_sending(&mut self, error_code: u64) {
        let _ = self.0.stop(VarInt::from_u64(error_code).unwrap_or(VarInt::MAX));
    }

    fn recv_id(&self) -> StreamId {
        stream_id(self.0.id())
    }
}

thread_local! {
    /// The body `send_body` is sending, while its future is being polled on this thread.
    static LENT_BODY: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Sends `body` as the response's DATA on `stream`, its bytes handed to quinn as they are.
pub(super) async fn send_body(
    stream: &mut RequestStream<BidiStream, Bytes>,
    body: Bytes,
) -> Result<(), ::h3::error::StreamError> {
    let mut sending = pin!(stream.send_data(body.clone()));
    std::future::poll_fn(|cx| {
        let previous = LENT_BODY.with(|lent| lent.replace(Some(body.clone())));
        let polled = sending.as_mut().poll(cx);
        LENT_BODY.with(|lent| lent.replace(previous));
        polled
    })
    .await
}

/// A frame as the pieces quinn is given: what lies inside `lent` as slices of it, the rest
/// (frame headers, bodies not lent) copied, consecutive copied bytes in one piece.
fn pieces(mut frame: impl Buf, lent: Option<&Bytes>) -> Vec<Bytes> {
    let mut pieces = Vec::with_capacity(2);
    let mut copied = BytesMut::new();
    while frame.has_remaining() {
        let chunk = frame.chunk();
        let length = chunk.len();
        match lent.filter(|lent| contains(lent, chunk)) {
            Some(lent) => {
                if !copied.is_empty() {
                    pieces.push(copied.split().freeze());
                }
                pieces.push(lent.slice_ref(chunk));
            }
            None => copied.extend_from_slice(chunk),
        }
        frame.advance(length);
    }
    if !copied.is_empty() {
        pieces.push(copied.freeze());
    }
    pieces
}

/// Whether `part` is a non-empty range of `whole`'s memory (distinct live allocations
/// never overlap, so a frame header on h3's side can never pass for it).
fn contains(whole: &[u8], part: &[u8]) -> bool {
    let (start, end) = (whole.as_ptr() as usize, whole.as_ptr() as usize + whole.len());
    let (part_start, part_end) = (part.as_ptr() as usize, part.as_ptr() as usize + part.len());
    !part.is_empty() && start <= part_start && part_end <= end
}

fn stream_id(id: quinn::StreamId) -> StreamId {
    StreamId::try_from(u64::from(id)).expect("quinn's stream ids are QUIC varints")
}

fn connection_error(error: quinn::ConnectionError) -> ConnectionErrorIncoming {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => {
            ConnectionErrorIncoming::ApplicationClose { error_code: close.error_code.into_inner() }
        }
        quinn::ConnectionError::TimedOut => ConnectionErrorIncoming::Timeout,
        other => ConnectionErrorIncoming::Undefined(Arc::new(other)),
    }
}

fn stream_connection_error(error: quinn::ConnectionError) -> StreamErrorIncoming {
    StreamErrorIncoming::ConnectionErrorIncoming { connection_error: connection_error(error) }
}

fn write_error(error: quinn::WriteError) -> StreamErrorIncoming {
    match error {
        quinn::WriteError::Stopped(code) => StreamErrorIncoming::StreamTerminated { error_code: code.into_inner() },
        quinn::WriteError::ConnectionLost(error) => stream_connection_error(error),
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}

fn read_error(error: quinn::ReadError) -> StreamErrorIncoming {
    match error {
        quinn::ReadError::Reset(code) => StreamErrorIncoming::StreamTerminated { error_code: code.into_inner() },
        quinn::ReadError::ConnectionLost(error) => stream_connection_error(error),
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DATA frame as h3 lends it: its header bytes, then the payload.
    fn frame(payload: &Bytes) -> impl Buf {
        (&[0x00, 0x40, 0x40][..]).chain(payload.clone())
    }

    #[test]
    fn a_lent_body_goes_to_quinn_as_a_slice_of_itself() {
        let body = Bytes::from(vec![7u8; 25_000]);
        let pieces = pieces(frame(&body), Some(&body));
        assert_eq!(pieces.len(), 2);
        assert_eq!(&pieces[0][..], &[0x00, 0x40, 0x40]);
        assert_eq!(pieces[1].as_ptr(), body.as_ptr(), "the payload is the body's own memory");
        assert_eq!(pieces[1].len(), body.len());
    }

    #[test]
    fn anything_else_is_copied_into_one_piece() {
        let body = Bytes::from(vec![7u8; 1000]);
        let other = Bytes::from(vec![9u8; 1000]);
        for lent in [None, Some(&other)] {
            let pieces = pieces(frame(&body), lent);
            assert_eq!(pieces.len(), 1);
            assert_eq!(pieces[0].len(), 1003);
            assert_ne!(pieces[0].as_ptr(), body.as_ptr());
            assert_eq!(&pieces[0][3..], &body[..]);
        }
    }

    #[test]
    fn a_part_of_the_lent_body_is_a_slice_of_it() {
        let body = Bytes::from((0..=255u8).cycle().take(4096).collect::<Vec<u8>>());
        let part = body.slice(1000..3000);
        let pieces = pieces(frame(&part), Some(&body));
        assert_eq!(pieces[1].as_ptr(), part.as_ptr());
        assert_eq!(pieces[1], part);
        assert!(!contains(&body, &body[10..10]), "an empty range is never lent");
    }
}
