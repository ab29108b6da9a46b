//! A tonic codec for already-encoded messages: the gateway transcodes with
//! dynamic schemas, so egress moves bytes and never needs generated types.

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Starting size of a call's encode and decode buffers. tonic's default is
/// 8 KiB each; most messages are far smaller, and a long-lived idle stream
/// (a WebSocket call) should not hold 16 KiB for nothing. Buffers still grow
/// for larger messages (measured in BENCHMARKS.md: idle memory per call).
fn buffer() -> BufferSettings {
    BufferSettings::new(256, 32 * 1024)
}
use tonic::Status;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer()
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        let len = src.remaining();
        Ok(Some(src.copy_to_bytes(len)))
    }

    fn buffer_settings(&self) -> BufferSettings {
        buffer()
    }
}
