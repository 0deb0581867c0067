//! `session_core::codec::decode_session`, and the encryption envelope of
//! `session_core::seal`, on arbitrary bytes: neither may panic (nor abort
//! on a huge allocation). Whatever decodes must round-trip: re-encoded with
//! either codec, it decodes to the same session, so a value read from Redis
//! can always be written back; and sealed, it opens to the very bytes that
//! were sealed, under its storage key only.

#![no_main]

use libfuzzer_sys::fuzz_target;
use session_core::codec::{Codec, decode_session};
use session_core::seal::{Keyring, SealKey};

const STORAGE_KEY: &[u8] = b"fuzz:session";

fn keyring() -> Keyring {
    let keys = vec![
        SealKey::new("fuzz", 1, &[0x11; 32]).expect("a 32-byte key"),
        SealKey::new("fuzz", 2, &[0x22; 32]).expect("a 32-byte key"),
    ];
    Keyring::new(keys, Some(2)).expect("a valid keyring")
}

fuzz_target!(|data: &[u8]| {
    let keyring = keyring();
    // Arbitrary bytes as a stored value, sealed or not: a typed error or a
    // value, and what opens must decode without panicking.
    if let Ok(opened) = keyring.open(data, STORAGE_KEY) {
        let _ = decode_session(&opened);
    }
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
        let sealed = keyring
            .seal(bytes.clone(), STORAGE_KEY)
            .unwrap_or_else(|error| panic!("a {codec} value does not seal: {error}"));
        let opened = keyring
            .open(&sealed, STORAGE_KEY)
            .unwrap_or_else(|error| panic!("a sealed {codec} value does not open: {error}"));
        assert_eq!(opened.as_ref(), bytes.as_slice(), "sealing changed the value");
        assert!(
            keyring.open(&sealed, b"fuzz:another").is_err(),
            "a sealed value opened under another storage key"
        );
    }
});
