//! The vfio-user message layer and the card behind it: the input is a byte stream as a
//! client would send it, cut into messages exactly as the connection layer does, each
//! answered by a fresh connection's session over the real card.
//!
//! Properties: nothing panics; every reply is one well-formed message answering the
//! request (same id and command, size = its length, the error flag exactly when an
//! errno is given).

#![no_main]

use acq_device::transport::{PciFunction, Session};
use acq_device::vfio::conn::Message;
use acq_device::vfio::wire::{flag, Header, HEADER_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let card = acq_fuzz::card();
    let layout = card.layout();
    let dev: &dyn PciFunction = card.as_ref();
    let mut session = Session::new(dev, &layout);
    let mut rest = data;
    while rest.len() >= HEADER_SIZE {
        let header = Header::decode(rest[..HEADER_SIZE].try_into().unwrap());
        let Ok(len) = header.body_len() else { break };
        let Some(body) = rest.get(HEADER_SIZE..HEADER_SIZE + len) else {
            break;
        };
        rest = &rest[HEADER_SIZE + len..];
        let r = session.respond(Message {
            header,
            body: body.to_vec(),
            fds: Vec::new(),
        });
        if let Some(reply) = &r.reply {
            let h = Header::decode(reply[..HEADER_SIZE].try_into().unwrap());
            assert_eq!((h.id, h.command), (header.id, header.command));
            assert_eq!(h.size as usize, reply.len());
            assert_eq!(h.flags & flag::TYPE_MASK, flag::REPLY);
            assert_eq!(h.flags & flag::ERROR != 0, h.error != 0);
        } else {
            assert!(header.no_reply());
        }
        if r.end.is_some() {
            break;
        }
    }
    // As the server does when a client goes away.
    dev.disconnected();
});
