//! The view model driven by keys and updates, without a terminal; the
//! fixtures here (a listed app, stats, transfers) serve the view's tests too.

use super::*;
use blixard_node::{NodeId, ResourceKind, TransferId};

pub fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn keys(app: &mut App, codes: &str) -> Vec<Action> {
    codes.chars().flat_map(|c| app.on_key(key(KeyCode::Char(c)))).collect()
}

pub fn resource(name: &str, version: &str, fill: u8) -> ResourceInfo {
    ResourceInfo {
        kind: ResourceKind::VmImage,
        name: name.into(),
        version: version.into(),
        hash: blixard_node::Hash([fill; 32]),
        size: 2 * 1024 * 1024 * 1024 + fill as u64,
        created_unix_ms: 1_764_000_000_000,
    }
}

pub fn stats(p2p: bool) -> Stats {
    Stats {
        node_id: NodeId([0xab; 32]),
        addr: "10.0.0.1:7001".parse().unwrap(),
        peers_connected: 2,
        peers_known: 3,
        transfers_active: 1,
        transfers_queued: 1,
        bytes_sent: 10 << 20,
        bytes_received: 3 << 30,
        resources: 1,
        p2p_enabled: p2p,
        home_relay: None,
        relay_bytes_sent: 0,
        relay_bytes_received: 0,
        reused_bytes: 0,
        zero_bytes_skipped: 0,
        store: Default::default(),
    }
}

/// A node with one image of its own and two listed by peers.
pub fn listed() -> App {
    let mut app = App::new("127.0.0.1:7001");
    app.apply(Update::Snapshot(Box::new(Snapshot {
        stats: stats(true),
        peers: Vec::new(),
        transfers: Vec::new(),
        local: vec![resource("debian", "12", 1)],
        uploads: Vec::new(),
        elapsed_secs: 1.0,
    })));
    let claim = |r: ResourceInfo, peer: u8, trusted: bool| RemoteResource {
        peer: NodeId([peer; 32]),
        publisher: NodeId([peer; 32]),
        trusted,
        resource: r,
    };
    app.apply(Update::Remote(vec![
        claim(resource("debian", "12", 1), 2, true), // held here: not listed again
        claim(resource("ubuntu-server", "22.04", 2), 2, true),
        claim(resource("ubuntu-server", "22.04", 2), 3, false),
        claim(resource("nixos", "24.11", 3), 3, false),
    ]));
    app
}

#[test]
fn number_keys_pick_tabs_and_five_is_p2p() {
    let mut app = App::new("x");
    keys(&mut app, "1");
    assert_eq!(app.current_tab(), Tab::Overview);
    keys(&mut app, "5");
    assert_eq!(app.current_tab(), Tab::P2p);
    app.on_key(key(KeyCode::Tab));
    assert_eq!(app.current_tab(), Tab::Overview);
    app.on_key(key(KeyCode::BackTab));
    assert_eq!(app.current_tab(), Tab::P2p);
}

#[test]
fn esc_and_ctrl_c_quit_but_q_does_not() {
    let mut app = listed();
    assert_eq!(app.on_key(key(KeyCode::Esc)), vec![Action::Quit]);
    assert_eq!(app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), vec![Action::Quit]);
    assert!(!keys(&mut app, "q").contains(&Action::Quit));
}

#[test]
fn help_opens_on_question_mark_and_any_key_closes_it() {
    let mut app = App::new("x");
    keys(&mut app, "?");
    assert!(app.help);
    assert!(app.on_key(key(KeyCode::Esc)).is_empty(), "Esc closes the help, not the app");
    assert!(!app.help);
}

#[test]
fn p_toggles_p2p_from_the_known_state() {
    let mut app = App::new("x");
    assert!(keys(&mut app, "p").is_empty(), "unknown state: nothing to toggle");
    app.stats = Some(stats(true));
    assert_eq!(keys(&mut app, "p"), vec![Action::SetP2p(false)]);
    app.stats = Some(stats(false));
    assert_eq!(keys(&mut app, "p"), vec![Action::SetP2p(true)]);
}

#[test]
fn rows_list_ours_then_remote_claims_once_each() {
    let app = listed();
    let rows = app.rows();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(matches!(&rows[0], ResourceRow::Local(r) if r.name == "debian"));
    assert!(
        matches!(&rows[1], ResourceRow::Remote { claim, peers: 2 } if claim.resource.name == "ubuntu-server" && claim.trusted)
    );
    assert!(matches!(&rows[2], ResourceRow::Remote { claim, peers: 1 } if !claim.trusted));
}

#[test]
fn l_lists_and_d_downloads_the_selected_remote_image() {
    let mut app = listed();
    assert_eq!(keys(&mut app, "l"), vec![Action::Refresh { remote: true }]);
    assert_eq!(app.current_tab(), Tab::Resources);
    assert!(keys(&mut app, "d").is_empty(), "the first row is ours");
    app.on_key(key(KeyCode::Down));
    let actions = keys(&mut app, "d");
    assert_eq!(
        actions,
        vec![Action::Download {
            resource: resource("ubuntu-server", "22.04", 2),
            priority: TransferPriority::Normal,
            limit_mbps: None
        }]
    );
    for _ in 0..5 {
        app.on_key(key(KeyCode::Down));
    }
    assert_eq!(app.selected, 2, "the selection stays on the list");
}

#[test]
fn q_queues_with_a_picked_priority_and_a_limit() {
    let mut app = listed();
    app.on_key(key(KeyCode::Down));
    keys(&mut app, "q");
    assert!(matches!(app.prompt, Some(Prompt::Queue { .. })));
    app.on_key(key(KeyCode::Up)); // Normal -> High
    app.on_key(key(KeyCode::Tab));
    keys(&mut app, "x8"); // a letter is ignored in the limit
    let actions = app.on_key(key(KeyCode::Enter));
    assert_eq!(
        actions,
        vec![Action::Download {
            resource: resource("ubuntu-server", "22.04", 2),
            priority: TransferPriority::High,
            limit_mbps: Some(8.0)
        }]
    );
    assert!(app.prompt.is_none());
}

#[test]
fn a_bad_limit_keeps_the_dialog_open_and_says_why() {
    let mut app = listed();
    app.on_key(key(KeyCode::Down));
    keys(&mut app, "q");
    app.on_key(key(KeyCode::Tab));
    keys(&mut app, "..");
    assert!(app.on_key(key(KeyCode::Enter)).is_empty());
    assert!(app.prompt.is_some());
    assert!(app.message.as_deref().unwrap().contains("not a positive number"), "{:?}", app.message);
    assert!(app.on_key(key(KeyCode::Esc)).is_empty(), "Esc closes the dialog only");
    assert!(app.prompt.is_none());
}

#[test]
fn c_and_u_prompt_and_submit() {
    let mut app = App::new("x");
    keys(&mut app, "c");
    let actions = keys(&mut app, "10.0.0.2:7001");
    assert!(actions.is_empty(), "typing in a prompt triggers no key action");
    assert_eq!(app.on_key(key(KeyCode::Enter)), vec![Action::Connect("10.0.0.2:7001".into())]);

    keys(&mut app, "u");
    keys(&mut app, "/img/a.img");
    assert!(app.on_key(key(KeyCode::Enter)).is_empty(), "name and version are still empty");
    assert!(matches!(app.prompt, Some(Prompt::Upload { focus: 1, .. })));
    keys(&mut app, "ubuntu");
    app.on_key(key(KeyCode::Tab));
    keys(&mut app, "24.04");
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        vec![Action::Upload { path: "/img/a.img".into(), name: "ubuntu".into(), version: "24.04".into() }]
    );
}

#[test]
fn progress_events_update_in_place_and_others_are_logged() {
    let mut app = listed();
    let mut t = transfer(3, TransferState::Queued);
    t.progress = None;
    app.transfers = vec![t];
    let p = blixard_node::TransferProgress {
        bytes: 5,
        total: 10,
        speed_bps: 1.0,
        eta_secs: Some(5.0),
        providers: 1,
        shares: Vec::new(),
        ..Default::default()
    };
    let at = "12:00:00".to_string();
    app.apply(Update::Event { at: at.clone(), line: EventLine::Event(P2pEvent::TransferProgress(TransferId(3), p)) });
    assert_eq!(app.transfers[0].progress.as_ref().unwrap().bytes, 5);
    assert_eq!(app.transfers[0].state, TransferState::Running);
    assert!(app.log.is_empty());
    app.apply(Update::Event { at: at.clone(), line: EventLine::Event(P2pEvent::TransferCompleted(TransferId(3))) });
    app.apply(Update::Event { at, line: EventLine::Lagged { missed: 4 } });
    assert_eq!(app.log.len(), 2);
    assert!(app.log[1].contains("missed 4"));
}

#[test]
fn rates_come_from_byte_counters_between_snapshots() {
    let mut app = listed();
    let mut s = stats(true);
    s.bytes_received += 4_000_000;
    app.apply(Update::Snapshot(Box::new(Snapshot {
        stats: s,
        peers: Vec::new(),
        transfers: Vec::new(),
        local: Vec::new(),
        uploads: Vec::new(),
        elapsed_secs: 2.0,
    })));
    assert_eq!(app.rx_rate.back(), Some(&2_000_000));
    assert_eq!(app.tx_rate.back(), Some(&0));
    app.apply(Update::Offline("connection refused".into()));
    assert!(app.offline.is_some());
}

pub fn transfer(id: u64, state: TransferState) -> TransferInfo {
    TransferInfo {
        id: TransferId(id),
        kind: ResourceKind::VmImage,
        name: "ubuntu-server".into(),
        version: "22.04".into(),
        priority: TransferPriority::High,
        state,
        progress: Some(blixard_node::TransferProgress {
            bytes: 1 << 30,
            total: 2 << 30,
            speed_bps: 50e6,
            eta_secs: Some(21.5),
            providers: 2,
            shares: vec![
                blixard_node::ProviderShare { peer: NodeId([2; 32]), bytes: 700 << 20 },
                blixard_node::ProviderShare { peer: NodeId([3; 32]), bytes: 324 << 20 },
            ],
            ..Default::default()
        }),
        hash: Some(blixard_node::Hash([2; 32])),
        pinned: false,
        providers: Vec::new(),
        limit_mbps: Some(400.0),
        bases: Vec::new(),
        attempts: 1,
        error: None,
        duration_secs: None,
    }
}
