//! `tracekit completions SHELL` and `tracekit man [TOOL]`: shell completions and man pages,
//! generated from the same clap definitions that parse the command line, so they never drift.

use std::io::{self, Write};

use clap::{Args, Command};
use clap_complete::Shell;

use crate::error::Error;

#[derive(Debug, Clone, Args)]
#[command(after_help = "INSTALL:\n    \
    tracekit completions bash > /etc/bash_completion.d/tracekit\n    \
    tracekit completions zsh  > /usr/local/share/zsh/site-functions/_tracekit\n    \
    tracekit completions fish > ~/.config/fish/completions/tracekit.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

#[derive(Debug, Clone, Args)]
#[command(after_help = "INSTALL:\n    \
    tracekit man > /usr/local/share/man/man1/tracekit.1\n    \
    for t in tcpstate kprobe uprobe; do tracekit man $t > /usr/local/share/man/man1/tracekit-$t.1; done\n\n\
READ:\n    \
    tracekit man | man -l -")]
pub struct ManArgs {
    /// A tool's own page (tracekit-TOOL(1)) instead of tracekit(1)
    #[arg(value_name = "TOOL")]
    pub tool: Option<String>,
}

fn emit(bytes: &[u8]) -> Result<i32, Error> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::io("writing output", e)),
        _ => Ok(0),
    }
}

/// The command as users see it: clap_complete offers hidden subcommands (`__exec-gate`), and
/// clap cannot remove one, so the visible ones go into a copy of the top level (which has no
/// options of its own besides --help and --version).
fn visible(cmd: Command) -> Command {
    let subs: Vec<Command> = cmd.get_subcommands().filter(|c| !c.is_hide_set()).cloned().collect();
    let mut top = Command::new(cmd.get_name().to_owned()).version(env!("CARGO_PKG_VERSION")).subcommands(subs);
    if let Some(about) = cmd.get_about() {
        top = top.about(about.clone());
    }
    if let Some(after) = cmd.get_after_help() {
        top = top.after_help(after.clone());
    }
    top
}

pub fn completions(args: &CompletionsArgs, cmd: Command) -> Result<i32, Error> {
    let mut cmd = visible(cmd);
    let mut buf = Vec::new();
    let name = cmd.get_name().to_owned();
    clap_complete::generate(args.shell, &mut cmd, name, &mut buf);
    emit(&buf)
}

pub fn man(args: &ManArgs, cmd: Command) -> Result<i32, Error> {
    let cmd = visible(cmd);
    let page = match &args.tool {
        None => cmd,
        Some(tool) => {
            let tools: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
            let Some(sub) = cmd.find_subcommand(tool) else {
                return Err(Error::usage(format!("no tool `{tool}`"), Some(format!("one of: {}", tools.join(", ")))));
            };
            // The page is tracekit-TOOL(1), its synopsis `tracekit TOOL …`.
            let name = format!("tracekit-{}", sub.get_name());
            sub.clone().name(name.clone()).bin_name(format!("tracekit {}", sub.get_name())).display_name(name)
        }
    };
    let mut buf = Vec::new();
    clap_mangen::Man::new(page).render(&mut buf).map_err(|e| Error::io("rendering the man page", e))?;
    emit(&buf)
}
