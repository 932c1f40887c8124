//! Client bodies for `POST /v1/chat/completions`: decoding must not panic, and a decoded
//! request must encode for every upstream without panicking (see `encode_everywhere`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_wire::openai;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = openai::decode_chat_request(data) {
        sluice_fuzz::encode_everywhere(&req);
    }
});
