//! Moves codec frames over QUIC streams. No protocol logic lives here.

use bytes::BytesMut;

use crate::codec::{self, Request, Response, HEADER_LEN};
use crate::error::ProtocolError;

async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Vec<u8>, ProtocolError> {
    let mut header = [0u8; HEADER_LEN];
    recv.read_exact(&mut header).await?;
    let total = codec::frame_len(header).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let mut frame = vec![0u8; total];
    frame[..HEADER_LEN].copy_from_slice(&header);
    recv.read_exact(&mut frame[HEADER_LEN..]).await?;
    Ok(frame)
}

/// Reads one request frame.
pub async fn read_request(recv: &mut quinn::RecvStream) -> Result<Request, ProtocolError> {
    let frame = read_frame(recv).await?;
    let (req, _) = Request::decode(&frame).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    Ok(req)
}

/// Reads one response frame.
pub async fn read_response(recv: &mut quinn::RecvStream) -> Result<Response, ProtocolError> {
    let frame = read_frame(recv).await?;
    let (resp, _) = Response::decode(&frame).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    Ok(resp)
}

/// Writes one request frame.
pub async fn write_request(send: &mut quinn::SendStream, req: &Request) -> Result<(), ProtocolError> {
    let mut buf = BytesMut::new();
    req.encode(&mut buf);
    send.write_all(&buf).await?;
    Ok(())
}

/// Writes one response frame.
pub async fn write_response(send: &mut quinn::SendStream, resp: &Response) -> Result<(), ProtocolError> {
    let mut buf = BytesMut::new();
    resp.encode(&mut buf);
    send.write_all(&buf).await?;
    Ok(())
}
