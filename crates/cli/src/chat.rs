//! `redoubt chat`: a terminal UI. Conversations on the left, the selected conversation's
//! messages on the right (updated as the server pushes news), and a line to type into.
//!
//! Keys: Tab / Shift-Tab or ↓ / ↑ switch conversation, Enter sends, `/file PATH` sends a
//! file, Esc or Ctrl-C quits.
//!
//! Search: `/search WORDS` (Ctrl-F types the `/search ` for you) shows this device's
//! messages holding every word, newest first, in place of the conversation; Esc, Tab or
//! an arrow returns.
//!
//! The user's mailbox (pushed by the organisation's mail connector) is the "Mail" entry
//! beside the conversations: it lists the INBOX, newest first; typing a message's number
//! and Enter opens it, `/inbox` goes back to the list.
//!
//! When the organisation's policy sets an inactivity lock, the screen locks after that
//! many seconds without a key press (and at once on a remote lock) and asks for the
//! passcode; wrong passcodes count towards the policy's wipe limit.

use anyhow::Result;
use ratatui::crossterm::event::{Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph};
use ratatui::{DefaultTerminal, Frame};
use redoubt_client::{ClientError, Conversation, Messenger, Profile, Receipts, StoredMail, StoredMessage};
use redoubt_proto::GroupId;

/// What the screen shows.
#[derive(Debug, Default)]
pub(crate) struct App {
    pub conversations: Vec<Conversation>,
    pub selected: usize,
    pub messages: Vec<(StoredMessage, Receipts)>,
    pub input: String,
    pub status: String,
    pub me: String,
    /// Nothing is shown but the lock screen; `input` holds the passcode being typed.
    pub locked: bool,
    /// The user's mailbox group, shown as the mail view.
    pub mailbox: Option<GroupId>,
    /// The INBOX, newest first (when the mailbox is selected).
    pub mail: Vec<StoredMail>,
    /// The message opened in the mail view.
    pub opened: Option<StoredMail>,
    /// The results of `/search`, shown instead of the conversation while set.
    pub search: Option<SearchResults>,
}

/// What `/search` found.
#[derive(Debug, Default)]
pub(crate) struct SearchResults {
    pub query: String,
    pub hits: Vec<(Conversation, StoredMessage)>,
}

/// Hits shown by the chat's search.
const SEARCH_HITS: usize = 100;

/// The words of a `/search WORDS` line.
fn search_words(input: &str) -> Option<&str> {
    let rest = input.trim_start().strip_prefix("/search")?;
    (rest.is_empty() || rest.starts_with(' ')).then(|| rest.trim())
}

impl App {
    fn current(&self) -> Option<&Conversation> {
        self.conversations.get(self.selected)
    }

    fn mail_selected(&self) -> bool {
        self.mailbox.is_some() && self.current().map(|c| c.group_id) == self.mailbox
    }

    /// Reloads conversations and the selected one's messages from the local store.
    fn refresh(&mut self, messenger: &Messenger) -> Result<()> {
        let selected_id = self.current().map(|c| c.group_id);
        self.conversations = messenger.conversations()?;
        self.selected = selected_id
            .and_then(|id| self.conversations.iter().position(|c| c.group_id == id))
            .unwrap_or(0);
        self.messages.clear();
        self.mailbox = messenger.mailbox()?.map(|m| m.group_id);
        if self.mail_selected() {
            self.mail = messenger.mail().list(Some("INBOX"))?;
            if let Some(open) = &self.opened {
                self.opened = messenger.mail().get(&open.id)?;
            }
            return Ok(());
        }
        self.opened = None;
        if let Some(conversation) = self.current().cloned() {
            for message in messenger.messages(&conversation)? {
                let receipts = messenger.receipts(&conversation, message.seq)?;
                self.messages.push((message, receipts));
            }
        }
        Ok(())
    }

    fn select(&mut self, step: isize) {
        let count = self.conversations.len() as isize;
        if count > 0 {
            self.selected = (self.selected as isize + step).rem_euclid(count) as usize;
        }
    }
}

/// Draws the whole screen; pure, so tests render it into a buffer.
pub(crate) fn draw(frame: &mut Frame, app: &App) {
    if app.locked {
        let [body, status] =
            Layout::vertical([Constraint::Min(3), Constraint::Length(1)]).areas(frame.area());
        let masked = "*".repeat(app.input.chars().count());
        let lock = Paragraph::new(vec![
            Line::from("Redoubt is locked."),
            Line::from("Enter this device's passcode and press Enter (Esc quits)."),
            Line::from(""),
            Line::from(masked),
        ])
        .block(Block::default().borders(Borders::ALL).title(" Locked "));
        frame.render_widget(lock, body);
        frame.render_widget(Paragraph::new(app.status.as_str()), status);
        return;
    }
    let [main, input, status] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(3), Constraint::Length(1)])
            .areas(frame.area());
    let [left, right] = Layout::horizontal([Constraint::Length(26), Constraint::Min(20)]).areas(main);

    let items: Vec<ListItem> = app
        .conversations
        .iter()
        .map(|c| {
            if Some(c.group_id) == app.mailbox {
                return ListItem::new("✉ Mail");
            }
            let marker = if c.removed {
                " (removed)"
            } else if c.peer.is_some() {
                " ·"
            } else {
                ""
            };
            ListItem::new(format!("{}{marker}", c.name))
        })
        .collect();
    let list = List::new(items)
        .block(Block::default().borders(Borders::ALL).title(" Conversations "))
        .highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut state =
        ListState::default().with_selected((!app.conversations.is_empty()).then_some(app.selected));
    frame.render_stateful_widget(list, left, &mut state);

    if let Some(results) = &app.search {
        draw_search(frame, app, results, right, input, status);
        return;
    }
    if app.mail_selected() {
        draw_mail(frame, app, right, input, status);
        return;
    }
    let title = app
        .current()
        .map_or(" Redoubt ".to_owned(), |c| format!(" {} ", c.name));
    let mut lines: Vec<Line> = app
        .messages
        .iter()
        .map(|(m, receipts)| {
            if m.event {
                return Line::from(Span::styled(
                    format!("{} — {} —", crate::output::clock(m.sent_at_unix_s), m.text),
                    Style::default().add_modifier(Modifier::DIM | Modifier::ITALIC),
                ));
            }
            let mut spans = vec![
                Span::styled(
                    format!("{} ", crate::output::clock(m.sent_at_unix_s)),
                    Style::default().add_modifier(Modifier::DIM),
                ),
                Span::styled(
                    format!("{}: ", m.sender_user),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(m.text.as_str()),
            ];
            if m.sender_user.as_str() == app.me {
                let state = if !receipts.read.is_empty() {
                    " ✓✓ read"
                } else if !receipts.delivered.is_empty() {
                    " ✓ delivered"
                } else {
                    " · sent"
                };
                spans.push(Span::styled(state, Style::default().add_modifier(Modifier::DIM)));
            }
            if m.history {
                spans.push(Span::styled(
                    " (history)",
                    Style::default().add_modifier(Modifier::DIM),
                ));
            }
            Line::from(spans)
        })
        .collect();
    if app.conversations.is_empty() {
        lines.push(Line::from(
            "No conversations yet. Start one with `redoubt send USER TEXT`",
        ));
        lines.push(Line::from("or `redoubt group create NAME --members A,B`."));
    }
    // Show the newest messages: keep the last lines that fit inside the borders.
    let visible = usize::from(right.height.saturating_sub(2));
    let skip = lines.len().saturating_sub(visible);
    let panes = Panes { right, input, status };
    panes.draw(
        frame,
        app,
        &title,
        lines.split_off(skip),
        " Message — Enter sends, /file PATH, /search WORDS, Tab switches, Esc quits ",
    );
}

/// The right-hand side of the screen: a bordered pane, the input line, the status line.
struct Panes {
    right: ratatui::layout::Rect,
    input: ratatui::layout::Rect,
    status: ratatui::layout::Rect,
}

impl Panes {
    fn draw(&self, frame: &mut Frame, app: &App, title: &str, lines: Vec<Line>, prompt: &str) {
        frame.render_widget(
            Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
            self.right,
        );
        frame.render_widget(
            Paragraph::new(app.input.as_str()).block(Block::default().borders(Borders::ALL).title(prompt)),
            self.input,
        );
        let input = self.input;
        frame.set_cursor_position((input.x + 1 + app.input.chars().count() as u16, input.y + 1));
        frame.render_widget(Paragraph::new(app.status.as_str()), self.status);
    }
}

/// Search results: newest first, each with its conversation, time and sender.
fn draw_search(
    frame: &mut Frame,
    app: &App,
    results: &SearchResults,
    right: ratatui::layout::Rect,
    input: ratatui::layout::Rect,
    status: ratatui::layout::Rect,
) {
    let dim = Style::default().add_modifier(Modifier::DIM);
    let mut lines: Vec<Line> = results
        .hits
        .iter()
        .map(|(conversation, m)| {
            let when = crate::output::time(m.sent_at_unix_s).replace('T', " ");
            Line::from(vec![
                Span::styled(format!("{} ", when.get(..16).unwrap_or(&when)), dim),
                Span::styled(format!("{} · ", conversation.name), dim),
                Span::styled(
                    format!("{}: ", m.sender_user),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(m.text.as_str()),
            ])
        })
        .collect();
    if lines.is_empty() {
        lines.push(Line::from("No message found."));
    }
    let visible = usize::from(right.height.saturating_sub(2));
    lines.truncate(visible);
    let title = format!(
        " Search “{}” — {} found, newest first ",
        results.query,
        results.hits.len()
    );
    let panes = Panes { right, input, status };
    panes.draw(
        frame,
        app,
        &title,
        lines,
        " Search — /search WORDS again, Esc or Tab returns ",
    );
}

/// Runs `/search WORDS`: shows the hits, or with no words closes the results.
fn run_search(app: &mut App, messenger: &Messenger, words: &str) -> Result<()> {
    if words.is_empty() {
        app.search = None;
        app.status = "Type /search and some words.".to_owned();
        return Ok(());
    }
    let query = redoubt_client::search::SearchQuery {
        text: words.to_owned(),
        limit: SEARCH_HITS,
        ..Default::default()
    };
    let hits = messenger.search(&query)?;
    app.status = format!("{} message(s) found.", hits.len());
    app.search = Some(SearchResults {
        query: words.to_owned(),
        hits,
    });
    Ok(())
}

/// The mail view: the INBOX list, or one opened message.
fn draw_mail(
    frame: &mut Frame,
    app: &App,
    right: ratatui::layout::Rect,
    input: ratatui::layout::Rect,
    status: ratatui::layout::Rect,
) {
    let (title, lines): (String, Vec<Line>) = match &app.opened {
        Some(mail) => {
            let s = &mail.summary;
            let mut lines = vec![
                Line::from(format!("From:    {}", s.from)),
                Line::from(format!("To:      {}", s.to.join(", "))),
                Line::from(format!("Date:    {}", crate::output::time(s.date_unix_s))),
                Line::from(Span::styled(
                    format!("Subject: {}", s.subject),
                    Style::default().add_modifier(Modifier::BOLD),
                )),
            ];
            for a in &s.attachments {
                lines.push(Line::from(format!("Attachment: {} ({} bytes)", a.name, a.bytes)));
            }
            lines.push(Line::from(""));
            let text = mail.full_text.as_deref().unwrap_or(&s.preview);
            lines.extend(text.lines().map(|l| Line::from(l.to_owned())));
            if mail.full_text.is_none() && (s.preview.len() as u64) < s.text_bytes {
                lines.push(Line::from(format!(
                    "[… `redoubt mail read {}` fetches the rest]",
                    mail.id
                )));
            }
            (format!(" Mail — {} ", s.subject), lines)
        }
        None => {
            let mut lines: Vec<Line> = app
                .mail
                .iter()
                .enumerate()
                .map(|(n, mail)| {
                    let s = &mail.summary;
                    let style = if s.flags.seen {
                        Style::default()
                    } else {
                        Style::default().add_modifier(Modifier::BOLD)
                    };
                    Line::from(vec![
                        Span::styled(
                            format!("{:>3} ", n + 1),
                            Style::default().add_modifier(Modifier::DIM),
                        ),
                        Span::styled(
                            format!("{} ", crate::output::clock(s.date_unix_s)),
                            Style::default().add_modifier(Modifier::DIM),
                        ),
                        Span::styled(format!("{:<24} {}", s.from, s.subject), style),
                    ])
                })
                .collect();
            if lines.is_empty() {
                lines.push(Line::from("No mail in the INBOX."));
            }
            (" Mail — INBOX ".to_owned(), lines)
        }
    };
    let visible = usize::from(right.height.saturating_sub(2));
    let lines: Vec<Line> = lines.into_iter().take(visible).collect();
    let panes = Panes { right, input, status };
    panes.draw(
        frame,
        app,
        &title,
        lines,
        " Mail — a number + Enter opens, /inbox lists, Tab switches, Esc quits ",
    );
}

/// What Enter does in the mail view.
fn mail_input(app: &mut App, input: &str) {
    let input = input.trim();
    if input == "/inbox" {
        app.opened = None;
        app.status = "INBOX.".to_owned();
        return;
    }
    match input
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|n| app.mail.get(n))
    {
        Some(mail) => {
            app.opened = Some(mail.clone());
            app.status = format!("Message {}.", mail.id);
        }
        None => app.status = "Type a message's number, or /inbox.".to_owned(),
    }
}

enum Step {
    Key(Option<Event>),
    Server(Result<redoubt_proto::Event, redoubt_client::ClientError>),
    /// No key pressed for the policy's inactivity period.
    Idle,
}

pub(crate) async fn run(mut messenger: Messenger, profile: Profile) -> Result<()> {
    let mut terminal = ratatui::init();
    let result = run_loop(&mut terminal, &mut messenger, &profile).await;
    ratatui::restore();
    result
}

/// Tries to lift the lock screen with `passcode` (any input when the profile has none).
fn unlock(profile: &Profile, passcode: &str) -> Result<Option<String>> {
    if !profile.has_passcode() {
        return Ok(None);
    }
    match Profile::load(profile.dir(), Some(passcode)) {
        Ok(_) => Ok(None),
        Err(error @ ClientError::PasscodeWrong { .. }) => Ok(Some(error.to_string())),
        Err(error) => Err(error.into()),
    }
}

async fn run_loop(
    terminal: &mut DefaultTerminal,
    messenger: &mut Messenger,
    profile: &Profile,
) -> Result<()> {
    let me = profile.user().to_string();
    // Terminal input is blocking: read it on a thread and hand it over a bounded channel.
    let (keys_tx, mut keys) = tokio::sync::mpsc::channel(64);
    std::thread::spawn(move || {
        while let Ok(event) = ratatui::crossterm::event::read() {
            if keys_tx.blocking_send(event).is_err() {
                break;
            }
        }
    });
    let mut app = App { me, ..App::default() };
    messenger.sync().await?;
    app.refresh(messenger)?;
    app.status = "Connected.".to_owned();
    // Key-transparency notices stay in the status line until looked at (`redoubt security`).
    let mut notices_seen = 0;
    security_status(messenger, &mut app, &mut notices_seen)?;
    let mut last_key = tokio::time::Instant::now();
    loop {
        if !app.locked
            && let Some(conversation) = app.current().cloned()
        {
            let newest = app.messages.last().map_or(0, |m| m.0.seq);
            messenger.mark_read(&conversation, newest).await?;
        }
        terminal.draw(|frame| draw(frame, &app))?;
        let idle_seconds = messenger.session().policy().inactivity_lock_seconds;
        let lock_at = last_key + std::time::Duration::from_secs(u64::from(idle_seconds));
        let step = tokio::select! {
            key = keys.recv() => Step::Key(key),
            event = messenger.next_event() => Step::Server(event),
            () = tokio::time::sleep_until(lock_at), if idle_seconds > 0 && !app.locked => Step::Idle,
        };
        if matches!(step, Step::Key(Some(_))) {
            last_key = tokio::time::Instant::now();
        }
        match step {
            Step::Key(None) => return Ok(()),
            Step::Idle => {
                app.locked = true;
                app.input.clear();
                app.status = format!("Locked after {idle_seconds} s without input.");
            }
            Step::Key(Some(Event::Key(key))) if app.locked && key.kind == KeyEventKind::Press => {
                match key.code {
                    KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                    KeyCode::Backspace => {
                        app.input.pop();
                    }
                    KeyCode::Enter => {
                        let passcode = std::mem::take(&mut app.input);
                        match unlock(profile, &passcode)? {
                            None => {
                                app.locked = false;
                                app.status = "Unlocked.".to_owned();
                                app.refresh(messenger)?;
                            }
                            Some(why) => app.status = why,
                        }
                    }
                    KeyCode::Char(c) => app.input.push(c),
                    _ => {}
                }
            }
            Step::Key(Some(Event::Key(key))) if key.kind == KeyEventKind::Press => match key.code {
                KeyCode::Esc if app.search.is_some() => {
                    app.search = None;
                    app.status.clear();
                }
                KeyCode::Esc => return Ok(()),
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                KeyCode::Char('f') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    app.input = "/search ".to_owned();
                }
                KeyCode::Tab | KeyCode::Down => {
                    app.search = None;
                    app.select(1);
                    app.refresh(messenger)?;
                }
                KeyCode::BackTab | KeyCode::Up => {
                    app.search = None;
                    app.select(-1);
                    app.refresh(messenger)?;
                }
                KeyCode::Backspace => {
                    app.input.pop();
                }
                KeyCode::Enter if search_words(&app.input).is_some() => {
                    let input = std::mem::take(&mut app.input);
                    run_search(&mut app, messenger, search_words(&input).unwrap_or_default())?;
                }
                KeyCode::Enter if app.mail_selected() => {
                    let input = std::mem::take(&mut app.input);
                    mail_input(&mut app, &input);
                }
                KeyCode::Enter => {
                    let input = std::mem::take(&mut app.input);
                    app.search = None;
                    let Some(conversation) = app.current().cloned() else {
                        app.status = "No conversation selected.".to_owned();
                        continue;
                    };
                    let sent = match input.strip_prefix("/file ") {
                        Some(path) => messenger
                            .send_file(&conversation.name, std::path::Path::new(path.trim()), |_, _| {})
                            .await
                            .map(|_| format!("Sent {}.", path.trim())),
                        None if input.trim().is_empty() => continue,
                        None => messenger
                            .send_text(&conversation.name, &input)
                            .await
                            .map(|_| "Sent.".to_owned()),
                    };
                    app.status = match sent {
                        Ok(status) => status,
                        Err(error) => format!("Not sent: {error}"),
                    };
                    app.refresh(messenger)?;
                }
                KeyCode::Char(c) => app.input.push(c),
                _ => {}
            },
            Step::Key(Some(_)) => {}
            Step::Server(Err(error)) if error.is_transient() => {
                app.status = format!("Connection lost ({error}); reconnecting…");
                terminal.draw(|frame| draw(frame, &app))?;
                messenger.reconnect(u32::MAX, |_, _| {}).await?;
                messenger.sync().await?;
                app.refresh(messenger)?;
                app.status = "Reconnected.".to_owned();
            }
            Step::Server(Err(ClientError::DeviceLocked)) if profile.has_passcode() => {
                app.locked = true;
                app.input.clear();
                app.status = "Locked by the organisation.".to_owned();
            }
            Step::Server(event) => {
                event?;
                let report = messenger.sync().await?;
                if report.messages > 0 {
                    app.status = format!("{} new message(s).", report.messages);
                } else if report.mail > 0 {
                    app.status = "Mail updated.".to_owned();
                }
                app.refresh(messenger)?;
                security_status(messenger, &mut app, &mut notices_seen)?;
            }
        }
    }
}

/// Puts the newest key-transparency notice in the status line when one arrived.
fn security_status(messenger: &Messenger, app: &mut App, seen: &mut usize) -> Result<()> {
    let notices = messenger.security_notices()?;
    if notices.len() > *seen
        && let Some(newest) = notices.last()
    {
        app.status = format!("SECURITY NOTICE: {} (see `redoubt security`)", newest.detail);
    }
    *seen = notices.len();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use redoubt_proto::{DeviceId, GroupId, UserName};

    fn screen(app: &App) -> String {
        let mut terminal = Terminal::new(TestBackend::new(90, 16)).unwrap();
        terminal.draw(|frame| draw(frame, app)).unwrap();
        let buffer = terminal.backend().buffer();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    fn conversation(name: &str, id: u8) -> Conversation {
        Conversation {
            group_id: GroupId::from([id; 32]),
            name: name.into(),
            peer: None,
            cursor: 0,
            removed: false,
        }
    }

    #[test]
    fn shows_conversations_messages_receipts_and_attachments() {
        let message = |seq, user: &str, text: &str| StoredMessage {
            seq,
            sender_user: UserName::parse(user).unwrap(),
            sender_device: DeviceId::from([1; 16]),
            sent_at_unix_s: 1_700_000_000,
            server_time_unix_s: 1_700_000_000,
            text: text.into(),
            attachment: None,
            history: false,
            event: false,
        };
        let mut read = Receipts::default();
        read.read.insert(UserName::parse("bob").unwrap());
        let app = App {
            conversations: vec![conversation("ops", 1), conversation("bob", 2)],
            selected: 0,
            messages: vec![
                (message(3, "bob", "morning"), Receipts::default()),
                (message(4, "alice", "[file] plan.pdf (2048 bytes)"), read),
            ],
            input: "typing".into(),
            status: "Connected.".into(),
            me: "alice".into(),
            locked: false,
            ..App::default()
        };
        let text = screen(&app);
        for expected in [
            "Conversations",
            "ops",
            "bob",
            "morning",
            "[file] plan.pdf (2048 bytes)",
            "read",
            "typing",
            "Connected.",
        ] {
            assert!(text.contains(expected), "{expected:?} not on screen:\n{text}");
        }
    }

    #[test]
    fn the_lock_screen_hides_messages_and_masks_the_passcode() {
        let app = App {
            conversations: vec![conversation("secret-project", 1)],
            input: "hunter2".into(),
            locked: true,
            ..App::default()
        };
        let text = screen(&app);
        assert!(text.contains("locked"), "{text}");
        assert!(text.contains("*******"), "{text}");
        assert!(
            !text.contains("secret-project") && !text.contains("hunter2"),
            "{text}"
        );
    }

    #[test]
    fn empty_state_says_how_to_start() {
        let text = screen(&App::default());
        assert!(text.contains("No conversations yet"), "{text}");
    }

    #[test]
    fn search_results_replace_the_conversation_newest_first() {
        let hit = |seq, name: &str, user: &str, at: i64, text: &str| {
            (
                conversation(name, 1),
                StoredMessage {
                    seq,
                    sender_user: UserName::parse(user).unwrap(),
                    sender_device: DeviceId::from([1; 16]),
                    sent_at_unix_s: at,
                    server_time_unix_s: at,
                    text: text.into(),
                    attachment: None,
                    history: false,
                    event: false,
                },
            )
        };
        let app = App {
            conversations: vec![conversation("ops", 1), conversation("bob", 2)],
            messages: vec![],
            search: Some(SearchResults {
                query: "budg".into(),
                hits: vec![
                    hit(9, "ops", "carol", 1_700_000_600, "budget approved"),
                    hit(2, "bob", "bob", 1_700_000_000, "draft budgetary note"),
                ],
            }),
            ..App::default()
        };
        let text = screen(&app);
        for expected in [
            "Search “budg” — 2 found",
            "2023-11-14 22:23 ops · carol: budget approved",
            "2023-11-14 22:13 bob · bob: draft budgetary note",
        ] {
            assert!(text.contains(expected), "{expected:?} not on screen:\n{text}");
        }
        let newer = text.find("budget approved").unwrap();
        assert!(
            newer < text.find("draft budgetary").unwrap(),
            "newest first:\n{text}"
        );
        let none = App {
            search: Some(SearchResults {
                query: "zzz".into(),
                hits: vec![],
            }),
            ..App::default()
        };
        assert!(screen(&none).contains("No message found."));
    }

    #[test]
    fn a_search_line_is_told_from_a_message() {
        assert_eq!(search_words("/search budget plan "), Some("budget plan"));
        assert_eq!(search_words("/search"), Some(""));
        assert_eq!(search_words("/searching is fun"), None);
        assert_eq!(search_words("please /search this"), None);
    }

    fn stored_mail(uid: u32, subject: &str, seen: bool) -> StoredMail {
        use redoubt_mls::mail::{MailAttachmentInfo, MailFlags, MailRef, MailSummary};
        let mail = MailRef {
            folder: "INBOX".into(),
            uid_validity: 1,
            uid,
        };
        StoredMail {
            id: mail.short_id(),
            summary: MailSummary {
                mail,
                message_id: None,
                in_reply_to: None,
                references: vec![],
                from: "bob@corp.test".into(),
                to: vec!["alice@corp.test".into()],
                cc: vec![],
                subject: subject.into(),
                date_unix_s: 1_700_000_000 + i64::from(uid),
                flags: MailFlags {
                    seen,
                    ..MailFlags::default()
                },
                preview: format!("body of {subject}"),
                text_bytes: 100,
                attachments: vec![MailAttachmentInfo {
                    name: "numbers.csv".into(),
                    content_type: "text/csv".into(),
                    bytes: 42,
                }],
            },
            full_text: None,
            body_blob: None,
            received_at_unix_s: 0,
        }
    }

    #[test]
    fn the_mailbox_is_a_mail_view_that_lists_and_opens_messages() {
        let mailbox = conversation("mailbox", 9);
        let mut app = App {
            conversations: vec![conversation("ops", 1), mailbox.clone()],
            selected: 1,
            mailbox: Some(mailbox.group_id),
            mail: vec![
                stored_mail(2, "Quarterly numbers", false),
                stored_mail(1, "Lunch", true),
            ],
            ..App::default()
        };
        let text = screen(&app);
        assert!(text.contains("✉ Mail"), "{text}");
        assert!(text.contains("Mail — INBOX"), "{text}");
        assert!(
            text.contains("Quarterly numbers") && text.contains("Lunch"),
            "{text}"
        );
        mail_input(&mut app, "1");
        let text = screen(&app);
        assert!(text.contains("Subject: Quarterly numbers"), "{text}");
        assert!(text.contains("Attachment: numbers.csv"), "{text}");
        assert!(text.contains("body of Quarterly numbers"), "{text}");
        assert!(text.contains("fetches the rest"), "{text}");
        mail_input(&mut app, "7");
        assert!(app.status.contains("number"), "{}", app.status);
        mail_input(&mut app, "/inbox");
        assert!(app.opened.is_none());
    }
}
