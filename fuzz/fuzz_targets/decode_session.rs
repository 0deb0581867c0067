//! `session_core::codec::decode_session` on arbitrary bytes: it must never
//! panic (nor abort on a huge allocation), and whatever it accepts must
//! round-trip: re-encoded with either codec, it decodes to the same session,
//! so a value read from Redis can always be written back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use session_core::codec::{Codec, decode_session};

fuzz_target!(|data: &[u8]| {
    let Ok(session) = decode_session(data) else {
        return;
    };
    for codec in [Codec::Bincode, Codec::Json] {
        let bytes = codec.encode_session(&session).unwrap_or_else(|error| {
            panic!("a decoded session does not encode with {codec}: {error}")
        });
        let again = decode_session(&bytes).unwrap_or_else(|error| {
            panic!("a re-encoded ({codec}) session does not decode: {error}")
        });
        assert_eq!(again, session, "{codec} round trip changed the session");
    }
});
