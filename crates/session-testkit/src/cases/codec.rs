//! User data and stored values: what round-trips, and what a corrupt value
//! gives.

use session_core::codec::Codec;
use session_core::{CodecError, Error, SessionId, SessionType, Storage};

use crate::fixture::session;
use crate::{Fixture, Harness, Profile};

/// User data of a caller's own type round-trips with both codecs.
pub async fn user_data_of_a_custom_type_round_trips<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    for codec in [Codec::Bincode, Codec::Json] {
        let mut written = session(SessionType::Streamable);
        written.set_data_with(codec, &Profile::sample()).unwrap();
        store.upsert(&written).await;
        let read = store.must_get(&written.id()).await;
        assert_eq!(
            read.data::<Profile>().unwrap(),
            Some(Profile::sample()),
            "{codec}"
        );
    }
}

/// A stored value that is not in the session format gives a typed codec
/// error and leaves other sessions alone; user data read as the wrong type
/// gives a codec error on every backend.
pub async fn corrupt_stored_value_is_a_codec_error<H: Harness>(harness: &H) {
    let store = Fixture::open(harness).await;
    let mut written = session(SessionType::Mcp);
    written.set_data(&"not a profile").unwrap();
    store.upsert(&written).await;
    let read = store.must_get(&written.id()).await;
    assert!(matches!(
        read.data::<Profile>(),
        Err(CodecError::Decode { .. })
    ));

    let valid = Codec::Bincode.encode_session(&written).unwrap();
    let corrupt: [(&str, Vec<u8>); 5] = [
        ("foreign", b"{\"some\":\"json\"}".to_vec()),
        ("truncated", valid[..valid.len() / 2].to_vec()),
        (
            "future version",
            [&[0xC5, 0x53, 99, 1][..], &valid[4..]].concat(),
        ),
        ("empty", Vec::new()),
        // A valid value of another session, under this id's key.
        ("another session's", valid.clone()),
    ];
    for (what, bytes) in corrupt {
        let id = SessionId::new();
        if !harness.write_raw(&id, &bytes).await {
            // This backend stores values, not bytes: no corrupt value can
            // exist in it, and the user-data check above is the case.
            return;
        }
        match store.storage.get(&id, store.ttl).await {
            Err(Error::Codec(_)) => {}
            other => panic!("{what} value gave {other:?}, expected a codec error"),
        }
    }
    assert!(store.exists(&written.id()).await);
}
