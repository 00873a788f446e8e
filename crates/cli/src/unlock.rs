//! Opening the device's profile: with the passcode from `REDOUBT_PASSCODE`, or asked for on
//! the terminal (without echo) when the profile has one.

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Result, bail};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal;
use redoubt_client::{ClientError, Profile};

/// Times the passcode is asked for before giving up (each wrong one counts towards the
/// profile's wipe limit, and the error says how many remain).
const PROMPTS_MAX: u32 = 3;

/// Loads the profile in `dir`, unlocking it if it has a passcode.
pub(crate) fn load_profile(dir: &Path) -> Result<Profile> {
    if let Ok(mut passcode) = std::env::var("REDOUBT_PASSCODE") {
        let loaded = Profile::load(dir, Some(&passcode));
        forget(&mut passcode);
        return Ok(loaded?);
    }
    if !Profile::passcode_protected(dir)? {
        return Ok(Profile::load(dir, None)?);
    }
    if !std::io::stdin().is_terminal() {
        return Err(ClientError::PasscodeRequired.into());
    }
    let mut prompt = 1;
    loop {
        let mut passcode = read_hidden(&format!("Passcode for {}: ", dir.display()))?;
        let loaded = Profile::load(dir, Some(&passcode));
        forget(&mut passcode);
        match loaded {
            Err(error @ ClientError::PasscodeWrong { .. }) if prompt < PROMPTS_MAX => {
                eprintln!("{error}");
                prompt += 1;
            }
            other => return Ok(other?),
        }
    }
}

/// Best effort: the passcode's bytes are overwritten before the memory is freed.
pub(crate) fn forget(passcode: &mut String) {
    let mut bytes = std::mem::take(passcode).into_bytes();
    bytes.fill(0);
    std::hint::black_box(&bytes);
}

/// Reads a line from the terminal without echoing it.
pub(crate) fn read_hidden(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    terminal::enable_raw_mode()?;
    let mut line = String::new();
    let result = loop {
        match event::read() {
            Ok(Event::Key(key)) if key.kind != KeyEventKind::Release => match key.code {
                KeyCode::Enter => break Ok(()),
                KeyCode::Char('c' | 'd') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    break Err(anyhow::anyhow!("cancelled"));
                }
                KeyCode::Esc => break Err(anyhow::anyhow!("cancelled")),
                KeyCode::Backspace => {
                    line.pop();
                }
                KeyCode::Char(c) => line.push(c),
                _ => {}
            },
            Ok(_) => {}
            Err(error) => break Err(error.into()),
        }
    };
    let restored = terminal::disable_raw_mode();
    eprintln!();
    if let Err(error) = result {
        forget(&mut line);
        return Err(error);
    }
    restored?;
    if line.is_empty() {
        bail!("nothing entered");
    }
    Ok(line)
}

/// A new passcode: `REDOUBT_PASSCODE`, or asked for twice on the terminal.
pub(crate) fn new_passcode(min_length: u32) -> Result<String> {
    let passcode = match std::env::var("REDOUBT_PASSCODE") {
        Ok(passcode) => passcode,
        Err(_) if std::io::stdin().is_terminal() => {
            let first = read_hidden(&format!("New passcode (at least {min_length} characters): "))?;
            let mut second = read_hidden("Repeat the new passcode: ")?;
            let same = first == second;
            forget(&mut second);
            if !same {
                bail!("the passcodes differ; nothing was changed");
            }
            first
        }
        Err(_) => return Err(ClientError::PasscodeSetupRequired { min_length }.into()),
    };
    if (passcode.chars().count() as u64) < u64::from(min_length) {
        bail!("the passcode must have at least {min_length} characters");
    }
    Ok(passcode)
}

/// Opens something that authenticates (a session, a messenger). When the organisation's
/// policy requires a passcode this device lacks, sets one and tries again.
pub(crate) async fn comply<T, F, Fut>(profile: &mut Profile, open: F) -> Result<T>
where
    F: Fn(Profile) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    match open(profile.clone()).await {
        Err(ClientError::PasscodeSetupRequired { min_length }) => {
            eprintln!("The organisation's policy requires a passcode on this device.");
            let mut passcode = new_passcode(min_length)?;
            let set = profile.set_passcode(Some(&passcode));
            forget(&mut passcode);
            set?;
            Ok(open(profile.clone()).await?)
        }
        other => Ok(other?),
    }
}
