//! The TUI's view model: what is on screen and what each key does to it.
//! No terminal and no network here: keys come in as crossterm key events,
//! the node's state as [`Update`]s, and what the user asked for goes out as
//! [`Action`]s for the run loop to carry out. So every key and every state
//! change is tested without either.

pub use super::prompt::{Prompt, PRIORITIES, UPLOAD_FIELDS};
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

    pub(super) fn say(&mut self, text: impl Into<String>) {
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
#[path = "app_tests.rs"]
pub(crate) mod tests;
