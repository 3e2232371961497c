//! The TUI's view model: what is on screen and what each key does to it.
//! No terminal and no network here: keys come in as crossterm key events,
//! the node's state as [`Update`]s, and what the user asked for goes out as
//! [`Action`]s for the run loop to carry out. So every key and every state
//! change is tested without either.

use std::collections::VecDeque;

use blixard_node::{
    client::EventLine, P2pEvent, PeerInfo, RemoteResource, ResourceInfo, Stats, TransferInfo, TransferPriority,
    TransferState, UploadProgress,
};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// Tabs, in order; the number key of each is its position plus one (the
/// P2P tab is `5`, as promised).
pub const TABS: [Tab; 5] = [Tab::Overview, Tab::Resources, Tab::Transfers, Tab::Logs, Tab::P2p];

/// Log lines kept.
const LOG_LINES: usize = 500;
/// Throughput samples kept for the sparklines (one per refresh).
pub const RATE_SAMPLES: usize = 120;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Overview,
    Resources,
    Transfers,
    Logs,
    P2p,
}

impl Tab {
    pub fn title(self) -> &'static str {
        match self {
            Tab::Overview => "Overview",
            Tab::Resources => "Resources",
            Tab::Transfers => "Transfers",
            Tab::Logs => "Logs",
            Tab::P2p => "P2P",
        }
    }

    fn index(self) -> usize {
        TABS.iter().position(|t| *t == self).expect("every tab is listed")
    }
}

/// What the run loop is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Re-read the node's state (and what peers list, with `remote`).
    Refresh { remote: bool },
    /// Turn P2P on or off.
    SetP2p(bool),
    /// Connect to a peer (`HOST:PORT` or `ID@HOST:PORT`).
    Connect(String),
    /// Import a file on the node's machine and publish it as a VM image.
    Upload { path: String, name: String, version: String },
    /// Queue a download of a listed resource.
    Download { resource: ResourceInfo, priority: TransferPriority, limit_mbps: Option<f64> },
    /// Leave.
    Quit,
}

/// The node's state at one refresh.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub stats: Stats,
    pub peers: Vec<PeerInfo>,
    pub transfers: Vec<TransferInfo>,
    pub local: Vec<ResourceInfo>,
    pub uploads: Vec<UploadProgress>,
    /// Seconds since the previous snapshot (for rates).
    pub elapsed_secs: f64,
}

/// What the run loop tells the model.
#[derive(Debug, Clone)]
pub enum Update {
    Snapshot(Box<Snapshot>),
    Remote(Vec<RemoteResource>),
    /// A line of the event stream, with the wall-clock time it came.
    Event {
        at: String,
        line: EventLine,
    },
    /// The node cannot be reached: why.
    Offline(String),
    /// An action finished: what to tell the user.
    Done(String),
    /// An action failed: why.
    Failed(String),
}

/// A row of the resource list: one of ours, or one a peer lists.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceRow {
    Local(ResourceInfo),
    /// A remote claim and how many peers list it.
    Remote {
        claim: RemoteResource,
        peers: usize,
    },
}

impl ResourceRow {
    pub fn resource(&self) -> &ResourceInfo {
        match self {
            ResourceRow::Local(r) => r,
            ResourceRow::Remote { claim, .. } => &claim.resource,
        }
    }
}

/// The priorities the picker offers, highest first.
pub const PRIORITIES: [TransferPriority; 4] =
    [TransferPriority::Critical, TransferPriority::High, TransferPriority::Normal, TransferPriority::Low];

/// A dialog waiting for input.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// `c`: a peer address.
    Connect { input: String },
    /// `u`: file, name, version; `focus` is the field being typed.
    Upload { fields: [String; 3], focus: usize },
    /// `q`: a priority (index into [`PRIORITIES`]) and an optional limit
    /// in Mbit/s for the selected resource; `focus` 0 is the picker, 1 the limit.
    Queue { resource: ResourceInfo, priority: usize, limit: String, focus: usize },
}

pub const UPLOAD_FIELDS: [&str; 3] = ["File", "Name", "Version"];

/// Everything the screen shows.
#[derive(Debug, Default)]
pub struct App {
    pub tab: TabState,
    pub help: bool,
    pub stats_panel: bool,
    pub prompt: Option<Prompt>,
    /// Why the node cannot be reached, while it cannot.
    pub offline: Option<String>,
    pub stats: Option<Stats>,
    pub peers: Vec<PeerInfo>,
    pub transfers: Vec<TransferInfo>,
    pub local: Vec<ResourceInfo>,
    pub remote: Vec<RemoteResource>,
    pub uploads: Vec<UploadProgress>,
    /// Selected row of the resource list.
    pub selected: usize,
    pub log: VecDeque<String>,
    /// Bytes per second received and sent, one sample per refresh.
    pub rx_rate: VecDeque<u64>,
    pub tx_rate: VecDeque<u64>,
    /// The status line: the last action's outcome.
    pub message: Option<String>,
    /// Where the node's control API is (shown in the title).
    pub target: String,
}

/// The current tab (a newtype so `App` can derive `Default`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TabState(pub Tab);

impl Default for TabState {
    fn default() -> Self {
        TabState(Tab::P2p)
    }
}

fn ctrl_c(key: &KeyEvent) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c')
}

impl App {
    pub fn new(target: impl Into<String>) -> Self {
        App { target: target.into(), ..Default::default() }
    }

    pub fn current_tab(&self) -> Tab {
        self.tab.0
    }

    /// The resource list: ours, then what peers list that we do not hold
    /// (one row per claim, with how many peers list it).
    pub fn rows(&self) -> Vec<ResourceRow> {
        let mut rows: Vec<ResourceRow> = self.local.iter().cloned().map(ResourceRow::Local).collect();
        for claim in &self.remote {
            let r = &claim.resource;
            if self.local.iter().any(|l| l.hash == r.hash && l.name == r.name && l.version == r.version) {
                continue;
            }
            let same = |row: &ResourceRow| match row {
                ResourceRow::Remote { claim: c, .. } => {
                    c.resource.hash == r.hash && c.resource.name == r.name && c.resource.version == r.version
                }
                ResourceRow::Local(_) => false,
            };
            match rows.iter_mut().find(|row| same(row)) {
                Some(ResourceRow::Remote { peers, claim: c }) => {
                    *peers += 1;
                    c.trusted |= claim.trusted;
                }
                _ => rows.push(ResourceRow::Remote { claim: claim.clone(), peers: 1 }),
            }
        }
        rows
    }

    /// Transfers queued or running.
    pub fn active_transfers(&self) -> Vec<TransferInfo> {
        self.transfers.iter().filter(|t| t.state.is_active()).cloned().collect()
    }

    fn selected_row(&self) -> Option<ResourceRow> {
        self.rows().into_iter().nth(self.selected)
    }

    fn say(&mut self, text: impl Into<String>) {
        self.message = Some(text.into());
    }

    /// Handles one key; returns what the run loop must do.
    pub fn on_key(&mut self, key: KeyEvent) -> Vec<Action> {
        if key.kind != KeyEventKind::Press {
            return Vec::new();
        }
        if ctrl_c(&key) {
            return vec![Action::Quit];
        }
        if self.prompt.is_some() {
            return self.prompt_key(key);
        }
        if self.help {
            // Any key closes the help; Esc does not also quit.
            self.help = false;
            return Vec::new();
        }
        if self.stats_panel && matches!(key.code, KeyCode::Esc | KeyCode::Char('s')) {
            self.stats_panel = false;
            return Vec::new();
        }
        match key.code {
            KeyCode::Esc => return vec![Action::Quit],
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char(c @ '1'..='5') => self.tab = TabState(TABS[c as usize - '1' as usize]),
            KeyCode::Tab => self.tab = TabState(TABS[(self.current_tab().index() + 1) % TABS.len()]),
            KeyCode::BackTab => self.tab = TabState(TABS[(self.current_tab().index() + TABS.len() - 1) % TABS.len()]),
            KeyCode::Down | KeyCode::Char('j') => {
                self.selected = (self.selected + 1).min(self.rows().len().saturating_sub(1))
            }
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Char('p') => match &self.stats {
                Some(s) => {
                    let on = !s.p2p_enabled;
                    self.say(if on { "turning P2P on..." } else { "turning P2P off..." });
                    return vec![Action::SetP2p(on)];
                }
                None => self.say("the node's state is not known yet"),
            },
            KeyCode::Char('c') => self.prompt = Some(Prompt::Connect { input: String::new() }),
            KeyCode::Char('u') => self.prompt = Some(Prompt::Upload { fields: Default::default(), focus: 0 }),
            KeyCode::Char('r') => {
                self.say("refreshing...");
                return vec![Action::Refresh { remote: true }];
            }
            KeyCode::Char('l') => {
                self.tab = TabState(Tab::Resources);
                self.say("asking peers what they have...");
                return vec![Action::Refresh { remote: true }];
            }
            KeyCode::Char('s') => self.stats_panel = true,
            KeyCode::Char('d') => match self.selected_row() {
                Some(ResourceRow::Remote { claim, .. }) => {
                    let resource = claim.resource;
                    self.say(format!("queueing {} {}...", resource.name, resource.version));
                    return vec![Action::Download { resource, priority: TransferPriority::Normal, limit_mbps: None }];
                }
                Some(ResourceRow::Local(r)) => self.say(format!("{} {} is here already", r.name, r.version)),
                None => self.say("no resource selected: `l` lists them"),
            },
            KeyCode::Char('q') => match self.selected_row() {
                Some(ResourceRow::Remote { claim, .. }) => {
                    self.prompt = Some(Prompt::Queue {
                        resource: claim.resource,
                        priority: PRIORITIES.iter().position(|p| *p == TransferPriority::Normal).unwrap(),
                        limit: String::new(),
                        focus: 0,
                    })
                }
                Some(ResourceRow::Local(r)) => self.say(format!("{} {} is here already", r.name, r.version)),
                None => self.say("no resource selected: `l` lists them"),
            },
            _ => return Vec::new(),
        }
        Vec::new()
    }

    fn prompt_key(&mut self, key: KeyEvent) -> Vec<Action> {
        let Some(prompt) = self.prompt.as_mut() else { return Vec::new() };
        if key.code == KeyCode::Esc {
            self.prompt = None;
            return Vec::new();
        }
        match prompt {
            Prompt::Connect { input } => match key.code {
                KeyCode::Char(c) => input.push(c),
                KeyCode::Backspace => {
                    input.pop();
                }
                KeyCode::Enter if !input.trim().is_empty() => {
                    let peer = input.trim().to_string();
                    self.prompt = None;
                    self.say(format!("connecting to {peer}..."));
                    return vec![Action::Connect(peer)];
                }
                _ => {}
            },
            Prompt::Upload { fields, focus } => match key.code {
                KeyCode::Char(c) => fields[*focus].push(c),
                KeyCode::Backspace => {
                    fields[*focus].pop();
                }
                KeyCode::Tab | KeyCode::Down => *focus = (*focus + 1) % fields.len(),
                KeyCode::BackTab | KeyCode::Up => *focus = (*focus + fields.len() - 1) % fields.len(),
                KeyCode::Enter => {
                    if let Some(empty) = fields.iter().position(|f| f.trim().is_empty()) {
                        *focus = empty;
                        return Vec::new();
                    }
                    let [path, name, version] = fields.clone().map(|f| f.trim().to_string());
                    self.prompt = None;
                    self.say(format!("uploading {path} as {name} {version}..."));
                    return vec![Action::Upload { path, name, version }];
                }
                _ => {}
            },
            Prompt::Queue { resource, priority, limit, focus } => match (key.code, *focus) {
                (KeyCode::Tab | KeyCode::BackTab, _) => *focus = 1 - *focus,
                (KeyCode::Up | KeyCode::Char('k'), 0) | (KeyCode::Left, 0) => *priority = priority.saturating_sub(1),
                (KeyCode::Down | KeyCode::Char('j'), 0) | (KeyCode::Right, 0) => {
                    *priority = (*priority + 1).min(PRIORITIES.len() - 1)
                }
                (KeyCode::Char(c), 1) if c.is_ascii_digit() || c == '.' => limit.push(c),
                (KeyCode::Backspace, 1) => {
                    limit.pop();
                }
                (KeyCode::Enter, _) => {
                    let limit_mbps = match limit.trim() {
                        "" => None,
                        text => match text.parse::<f64>() {
                            Ok(v) if v.is_finite() && v > 0.0 => Some(v),
                            _ => {
                                *focus = 1;
                                self.message = Some(format!("{text:?} is not a positive number of Mbit/s"));
                                return Vec::new();
                            }
                        },
                    };
                    let (resource, priority) = (resource.clone(), PRIORITIES[*priority]);
                    self.prompt = None;
                    self.say(format!("queueing {} {} at {priority}...", resource.name, resource.version));
                    return vec![Action::Download { resource, priority, limit_mbps }];
                }
                _ => {}
            },
        }
        Vec::new()
    }

    /// Takes in what the run loop learned.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Snapshot(s) => {
                let Snapshot { stats, peers, transfers, local, uploads, elapsed_secs } = *s;
                if let Some(before) = &self.stats {
                    let per_sec =
                        |now: u64, then: u64| (now.saturating_sub(then) as f64 / elapsed_secs.max(1e-3)) as u64;
                    push(&mut self.rx_rate, per_sec(stats.bytes_received, before.bytes_received));
                    push(&mut self.tx_rate, per_sec(stats.bytes_sent, before.bytes_sent));
                }
                self.offline = None;
                self.stats = Some(stats);
                self.peers = peers;
                self.transfers = transfers;
                self.local = local;
                self.uploads = uploads;
                self.selected = self.selected.min(self.rows().len().saturating_sub(1));
            }
            Update::Remote(remote) => {
                self.remote = remote;
                self.selected = self.selected.min(self.rows().len().saturating_sub(1));
                if self.message.as_deref() == Some("asking peers what they have...") {
                    let n = self.rows().iter().filter(|r| matches!(r, ResourceRow::Remote { .. })).count();
                    self.say(format!("{n} resource(s) on peers that this node does not hold"));
                }
            }
            Update::Event { at, line } => self.event(at, line),
            Update::Offline(why) => self.offline = Some(why),
            Update::Done(text) => self.say(text),
            Update::Failed(why) => {
                self.log_line(format!("error: {why}"));
                self.say(format!("error: {why}"));
            }
        }
    }

    fn log_line(&mut self, line: String) {
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(line);
    }

    fn event(&mut self, at: String, line: EventLine) {
        let short = |id: &blixard_node::NodeId| id.to_string()[..8].to_string();
        let text = match &line {
            EventLine::Lagged { missed } => format!("missed {missed} events (the view is re-read)"),
            EventLine::Event(e) => match e {
                P2pEvent::PeerDiscovered(p) => format!("peer {} discovered at {}", short(&p.id), p.addr),
                P2pEvent::PeerConnected(id) => format!("peer {} connected", short(id)),
                P2pEvent::PeerDisconnected(id) => format!("peer {} disconnected", short(id)),
                P2pEvent::PeerMisbehaved(id, why) => format!("peer {} cut off: {why}", short(id)),
                P2pEvent::PathChanged(id, path) => format!("peer {} now {path}", short(id)),
                P2pEvent::ResourceAvailable(r) => format!("{} {} {} available", r.kind, r.name, r.version),
                P2pEvent::ResourceEvicted(r) => format!("{} {} {} evicted from the cache", r.kind, r.name, r.version),
                P2pEvent::TransferStarted(id) => format!("transfer {id} started"),
                P2pEvent::TransferCompleted(id) => format!("transfer {id} completed, verified"),
                P2pEvent::TransferFailed(id, f) => format!("transfer {id} failed: {f}"),
                P2pEvent::TransferProgress(id, p) => {
                    // Progress is shown in place, not logged.
                    if let Some(t) = self.transfers.iter_mut().find(|t| t.id == *id) {
                        t.progress = Some(p.clone());
                        t.state = TransferState::Running;
                    }
                    return;
                }
            },
        };
        self.log_line(format!("{at} {text}"));
    }
}

fn push(samples: &mut VecDeque<u64>, value: u64) {
    if samples.len() == RATE_SAMPLES {
        samples.pop_front();
    }
    samples.push_back(value);
}

#[cfg(test)]
pub(crate) mod tests {
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
        app.apply(Update::Event {
            at: at.clone(),
            line: EventLine::Event(P2pEvent::TransferProgress(TransferId(3), p)),
        });
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
}
