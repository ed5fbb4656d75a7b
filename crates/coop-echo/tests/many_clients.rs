//! Test 3: a thousand clients at once, on both sides of the socket one thread each.

mod common;

use common::{Server, clients_at_once};

const CLIENTS: usize = 1000;
const ROUND_TRIPS: usize = 10;

#[test]
fn a_thousand_clients_at_once_each_get_their_own_replies() {
    let server = Server::start(&["--quiet"]);
    let replies = clients_at_once(server.addr, CLIENTS, ROUND_TRIPS);
    assert_eq!(replies, CLIENTS * ROUND_TRIPS);
}
