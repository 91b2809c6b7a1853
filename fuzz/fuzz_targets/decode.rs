//! Feeds arbitrary bytes to the frame decoders. They must never panic, and
//! whatever decodes must re-encode to the exact bytes it was decoded from.
#![no_main]

use bytes::BytesMut;
use ferry_protocol::codec::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((req, used)) = Request::decode(data) {
        let mut buf = BytesMut::new();
        req.encode(&mut buf);
        assert_eq!(&buf[..], &data[..used]);
    }
    if let Ok((resp, used)) = Response::decode(data) {
        let mut buf = BytesMut::new();
        resp.encode(&mut buf);
        assert_eq!(&buf[..], &data[..used]);
    }
});
