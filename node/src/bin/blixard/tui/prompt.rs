//! The dialogs of the TUI (connect, upload, queue with a priority and a
//! limit): what they hold and how keys edit and submit them.

use blixard_node::{ResourceInfo, TransferPriority};
use crossterm::event::{KeyCode, KeyEvent};

use super::app::{Action, App};

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

impl App {
    pub(super) fn prompt_key(&mut self, key: KeyEvent) -> Vec<Action> {
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
}
