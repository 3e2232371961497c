//! `blixard tui`: a live view of one node over its control API, on tokio.
//!
//! One loop waits on three things: terminal input, a one-second tick, and
//! the node's event stream. Keys go to the view model ([`app::App`]), which
//! answers with actions; the loop runs each action as a task against a
//! [`NodeApi`] and feeds the outcome back as an update. The screen is drawn
//! from the model ([`view::draw`]) only after something changed, so an idle
//! view wakes once a second. Input, the terminal and the node are all
//! passed in, so tests run the whole loop against a fake node on a test
//! backend.
//!
//! Its rooms: [`app`] (the model), [`prompt`] (the dialogs' state),
//! [`view`] (the tabs), [`overlay`] (help, statistics, dialogs drawn over a
//! tab) and [`style`] (how figures are written and frames drawn).

pub mod app;
mod overlay;
mod prompt;
mod style;
pub mod view;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use blixard_node::{
    client::{ControlClient, EventLine},
    control::ResourceFile,
    DownloadRequest, RemoteResource,
};
use crossterm::event::Event;
use futures_util::{Stream, StreamExt};
use ratatui::{backend::Backend, Terminal};
use tokio::sync::mpsc;

use app::{Action, App, Snapshot, Update};

/// How often the node's state is re-read.
pub const TICK: Duration = Duration::from_secs(1);

/// What the TUI needs from a node (the control API, or a fake in tests).
pub trait NodeApi: Send + Sync + 'static {
    /// Where it is, for the title and error screens.
    fn target(&self) -> String;
    /// Its state now.
    fn snapshot(&self) -> impl std::future::Future<Output = Result<Snapshot>> + Send;
    /// What its peers list.
    fn remote(&self) -> impl std::future::Future<Output = Result<Vec<RemoteResource>>> + Send;
    /// Its events from now on, until the stream ends.
    fn events(&self) -> impl std::future::Future<Output = Result<mpsc::Receiver<EventLine>>> + Send;
    /// Carries out an action; what to tell the user.
    fn act(&self, action: Action) -> impl std::future::Future<Output = Result<String>> + Send;
}

/// The node whose data dir is `dir`, through its control API; the control
/// file is read again while the node cannot be reached (it may be starting,
/// or restarted on another port).
pub struct LiveNode {
    dir: PathBuf,
    client: Mutex<Option<ControlClient>>,
    last: Mutex<Option<Instant>>,
}

impl LiveNode {
    pub fn new(dir: PathBuf) -> Self {
        LiveNode { dir, client: Mutex::new(None), last: Mutex::new(None) }
    }

    fn client(&self) -> Result<ControlClient> {
        let mut c = self.client.lock().unwrap();
        if c.is_none() {
            *c = Some(super::cli::find(&self.dir)?);
        }
        Ok(c.clone().expect("just set"))
    }

    /// A call failed: read the control file again next time.
    fn forget<T>(&self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            *self.client.lock().unwrap() = None;
        }
        r
    }
}

impl NodeApi for LiveNode {
    fn target(&self) -> String {
        match self.client.lock().unwrap().as_ref() {
            Some(c) => c.addr().to_string(),
            None => format!("{} (data dir)", self.dir.display()),
        }
    }

    async fn snapshot(&self) -> Result<Snapshot> {
        let r = async {
            let c = self.client()?;
            let (stats, peers, transfers, local, uploads) =
                tokio::try_join!(c.status(), c.peers(), c.transfers(), c.resources(), c.uploads())?;
            let now = Instant::now();
            let elapsed_secs = self.last.lock().unwrap().replace(now).map_or(1.0, |t| (now - t).as_secs_f64());
            Ok(Snapshot { stats, peers, transfers, local, uploads, elapsed_secs })
        }
        .await;
        self.forget(r)
    }

    async fn remote(&self) -> Result<Vec<RemoteResource>> {
        let r = async { Ok(self.client()?.remote_resources().await?) }.await;
        self.forget(r)
    }

    async fn events(&self) -> Result<mpsc::Receiver<EventLine>> {
        let mut stream = self.forget(async { Ok(self.client()?.events().await?) }.await)?;
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            while let Some(Ok(line)) = stream.next().await {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn act(&self, action: Action) -> Result<String> {
        let c = self.client()?;
        Ok(match action {
            Action::SetP2p(on) => {
                let on = c.set_p2p_enabled(on).await?;
                format!("P2P is {}", if on { "on" } else { "off" })
            }
            Action::Connect(peer) => format!("connected to {}", c.connect(&peer).await?),
            Action::Upload { path, name, version } => {
                let path = std::path::absolute(&path)?;
                let file =
                    ResourceFile { kind: "vm-image".into(), name, version, path, overwrite: false, hand_over: false };
                let r = c.upload(&file).await?;
                format!(
                    "uploaded {} {} ({}), hash {}",
                    r.name,
                    r.version,
                    indicatif::HumanBytes(r.size),
                    &r.hash.to_hex()[..12]
                )
            }
            Action::Download { resource, priority, limit_mbps } => {
                // The row the user picked: that content, whoever claims it.
                let mut request = DownloadRequest::new(resource.kind.clone(), &resource.name, &resource.version)
                    .priority(priority)
                    .hash(resource.hash);
                request.limit_mbps = limit_mbps;
                let id = c.download(&request).await?;
                let limit = limit_mbps.map(|m| format!(", limit {m} Mbit/s")).unwrap_or_default();
                format!("transfer {id} queued: {} {} at {priority}{limit}", resource.name, resource.version)
            }
            Action::Refresh { .. } | Action::Quit => String::new(),
        })
    }
}

/// The wall-clock time of day (UTC), for the event log.
fn clock() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Runs the view until the user quits or the input ends. Returns the model
/// as it ended (tests look at it).
pub async fn run<B, A, I>(terminal: &mut Terminal<B>, api: Arc<A>, mut input: I, tick: Duration) -> Result<App>
where
    B: Backend,
    A: NodeApi,
    I: Stream<Item = std::io::Result<Event>> + Unpin,
{
    let mut app = App::new(api.target());
    let (tx, mut updates) = mpsc::channel::<Update>(256);
    let mut ticks = tokio::time::interval(tick);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events: Option<mpsc::Receiver<EventLine>> = None;
    let mut refreshing = false;
    let mut dirty = true;
    spawn_remote(&api, &tx);
    loop {
        if dirty {
            terminal.draw(|f| view::draw(f, &app))?;
            dirty = false;
        }
        tokio::select! {
            key = input.next() => {
                let Some(key) = key else { return Ok(app) };
                match key? {
                    Event::Key(key) => {
                        for action in app.on_key(key) {
                            match action {
                                Action::Quit => return Ok(app),
                                Action::Refresh { remote } => {
                                    spawn_snapshot(&api, &tx, &mut refreshing);
                                    if remote {
                                        spawn_remote(&api, &tx);
                                    }
                                }
                                action => {
                                    let (api, tx) = (api.clone(), tx.clone());
                                    tokio::spawn(async move {
                                        let update = match api.act(action).await {
                                            Ok(done) => Update::Done(done),
                                            Err(e) => Update::Failed(format!("{e:#}")),
                                        };
                                        let _ = tx.send(update).await;
                                    });
                                }
                            }
                        }
                        dirty = true;
                    }
                    Event::Resize(..) => dirty = true,
                    _ => {}
                }
            }
            Some(update) = updates.recv() => {
                if matches!(update, Update::Snapshot(_) | Update::Offline(_)) {
                    refreshing = false;
                }
                let done = matches!(update, Update::Done(_));
                app.apply(update);
                if done {
                    // What the action changed shows at once, not at the next tick.
                    spawn_snapshot(&api, &tx, &mut refreshing);
                }
                app.target = api.target();
                dirty = true;
            }
            line = async { events.as_mut()?.recv().await }, if events.is_some() => {
                match line {
                    Some(line) => {
                        let lagged = matches!(line, EventLine::Lagged { .. });
                        app.apply(Update::Event { at: clock(), line });
                        if lagged {
                            spawn_snapshot(&api, &tx, &mut refreshing);
                        }
                    }
                    // The node went away: subscribe again at the next tick.
                    None => events = None,
                }
                dirty = true;
            }
            _ = ticks.tick() => {
                spawn_snapshot(&api, &tx, &mut refreshing);
                if events.is_none() && app.offline.is_none() {
                    events = api.events().await.ok();
                }
                // Redrawn when the snapshot arrives.
            }
        }
    }
}

fn spawn_snapshot<A: NodeApi>(api: &Arc<A>, tx: &mpsc::Sender<Update>, refreshing: &mut bool) {
    if std::mem::replace(refreshing, true) {
        return; // one at a time: a slow node is not asked twice
    }
    let (api, tx) = (api.clone(), tx.clone());
    tokio::spawn(async move {
        let update = match api.snapshot().await {
            Ok(s) => Update::Snapshot(Box::new(s)),
            Err(e) => Update::Offline(format!("{e:#}")),
        };
        let _ = tx.send(update).await;
    });
}

fn spawn_remote<A: NodeApi>(api: &Arc<A>, tx: &mpsc::Sender<Update>) {
    let (api, tx) = (api.clone(), tx.clone());
    tokio::spawn(async move {
        if let Ok(remote) = api.remote().await {
            let _ = tx.send(Update::Remote(remote)).await;
        }
    });
}

/// `blixard tui`: takes over the terminal (restored on exit and on panic)
/// and runs the view against the node in `dir`.
pub async fn main(dir: PathBuf) -> Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "blixard tui needs a terminal (stdin and stdout); for scripts use `blixard status`, `peers`, `transfers`"
        );
    }
    let api = Arc::new(LiveNode::new(dir));
    let mut terminal = ratatui::try_init()?;
    let result = run(&mut terminal, api, crossterm::event::EventStream::new(), TICK).await;
    ratatui::restore();
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::backend::TestBackend;

    use super::{app::tests::*, *};

    /// A node that answers from fixed data and records the actions.
    struct FakeNode {
        p2p: Mutex<bool>,
        actions: Mutex<Vec<Action>>,
    }

    impl NodeApi for FakeNode {
        fn target(&self) -> String {
            "fake".into()
        }
        async fn snapshot(&self) -> Result<Snapshot> {
            Ok(Snapshot {
                stats: stats(*self.p2p.lock().unwrap()),
                peers: Vec::new(),
                transfers: vec![transfer(1, blixard_node::TransferState::Running)],
                local: Vec::new(),
                uploads: Vec::new(),
                elapsed_secs: 1.0,
            })
        }
        async fn remote(&self) -> Result<Vec<RemoteResource>> {
            Ok(listed().remote)
        }
        async fn events(&self) -> Result<mpsc::Receiver<EventLine>> {
            let (tx, rx) = mpsc::channel(4);
            tx.send(EventLine::Event(blixard_node::P2pEvent::TransferStarted(blixard_node::TransferId(1))))
                .await
                .unwrap();
            std::mem::forget(tx); // the stream stays open
            Ok(rx)
        }
        async fn act(&self, action: Action) -> Result<String> {
            if let Action::SetP2p(on) = action {
                *self.p2p.lock().unwrap() = on;
            }
            self.actions.lock().unwrap().push(action);
            Ok("done".into())
        }
    }

    /// Keys spaced out in time, as a person types them.
    fn typed(keys: Vec<KeyCode>) -> impl Stream<Item = std::io::Result<Event>> + Unpin {
        Box::pin(futures_util::stream::iter(keys).then(|k| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(Event::Key(KeyEvent::new(k, KeyModifiers::NONE)))
        }))
    }

    /// The whole loop against the fake: `l` lists, Down selects the first
    /// remote image, `q` queues it at High with a limit, `p` turns P2P
    /// off, Esc quits; the screen shows the P2P tab with P2P off.
    #[tokio::test]
    async fn the_loop_carries_keys_to_the_node_and_shows_the_result() {
        let fake = Arc::new(FakeNode { p2p: Mutex::new(true), actions: Mutex::new(Vec::new()) });
        let mut terminal = Terminal::new(TestBackend::new(100, 30)).unwrap();
        use KeyCode::*;
        let keys = vec![
            Char('l'),
            Down, // the fake holds nothing: row 0 is debian, 1 ubuntu-server
            Char('q'),
            Up,
            Tab,
            Char('8'),
            Enter,
            Char('5'),
            Char('p'),
            Char('?'), // help, closed by the next key
            Char('x'),
            Esc,
        ];
        // A slow tick: every refresh seen here comes from the keys and actions.
        let app = run(&mut terminal, fake.clone(), typed(keys), Duration::from_millis(200)).await.unwrap();
        let actions = fake.actions.lock().unwrap().clone();
        assert_eq!(actions.len(), 2, "{actions:?}");
        assert!(matches!(
            &actions[0],
            Action::Download { resource, priority: blixard_node::TransferPriority::High, limit_mbps: Some(8.0) }
                if resource.name == "ubuntu-server"
        ));
        assert_eq!(actions[1], Action::SetP2p(false));
        assert_eq!(app.current_tab(), app::Tab::P2p);
        let screen = terminal.backend().to_string();
        assert!(screen.contains("P2P off"), "{screen}");
        assert!(app.log.iter().any(|l| l.contains("started")), "{:?}", app.log);
    }
}
