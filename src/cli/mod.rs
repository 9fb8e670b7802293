//! The `boardcast` command line: serve, migrate, the operator commands, and `watch`. Parsing is clap's (a
//! usage error exits with 2 and says what is wrong); each command here connects, does one thing, prints.

pub mod watch;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use uuid::Uuid;

use crate::admin;
use crate::config::{DatabaseArgs, Settings, SettingsArgs};
use crate::db;
use crate::error::{Error, Result};

const ENVIRONMENT: &str = "\
Each option whose value is named in capitals may be given as that environment variable instead (DATABASE_URL, \
BOARDCAST_ADDR, ...); the option wins. `watch` reads BOARDCAST_TOKEN and BOARDCAST_URL. RUST_LOG filters the log \
(default boardcast=info,warn).";

/// boardcast: a real-time feed of a PostgreSQL-backed project board
#[derive(Debug, Parser)]
#[command(name = "boardcast", version, after_help = ENVIRONMENT)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The command line, with the environment for the flags that have a variable. Exits on `--help`,
    /// `--version` and a usage error (with 2). An empty variable counts as unset: `BOARDCAST_ADDR= boardcast
    /// serve` serves on the default address.
    pub fn from_env_and_args() -> Cli {
        let mut command = without_empty_variables(Cli::command());
        let parsed = command.try_get_matches_from_mut(std::env::args_os()).and_then(|m| Cli::from_arg_matches(&m));
        parsed.unwrap_or_else(|e| e.format(&mut command).exit())
    }
}

/// The command with the variables that are set but empty taken off its flags (and its subcommands' flags).
fn without_empty_variables(command: clap::Command) -> clap::Command {
    let empty = |var: &std::ffi::OsStr| std::env::var_os(var).is_some_and(|v| v.is_empty());
    let command = command.mut_args(|arg| if arg.get_env().is_some_and(empty) { arg.env(None::<&str>) } else { arg });
    let names: Vec<String> = command.get_subcommands().map(|c| c.get_name().to_string()).collect();
    names.iter().fold(command, |command, name| command.mut_subcommand(name, without_empty_variables))
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (applies the schema first)
    #[command(after_help = ENVIRONMENT)]
    Serve(Box<SettingsArgs>),
    /// Apply the schema in sql/ (idempotent; serve does it too)
    Migrate(DatabaseArgs),
    /// Users: `user add NAME`
    #[command(subcommand)]
    User(UserCommand),
    /// API tokens: issue, revoke, list
    #[command(subcommand)]
    Token(TokenCommand),
    /// Projects: `project add NAME OWNER`
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Project membership: `member add PROJECT_ID USER [ROLE]`
    #[command(subcommand)]
    Member(MemberCommand),
    /// Create the demo users (alice, bob) and project if absent; print DEMO_PROJECT=…, DEMO_TOKEN=… (for eval)
    Demo(DatabaseArgs),
    /// Join a project's room and print each event as it arrives (reconnects and resumes on its own)
    Watch(watch::WatchArgs),
    /// Track a table of your app: its writes become events in the room `--room` gives each row
    Track {
        /// The table, optionally schema-qualified (public.cards)
        table: String,
        /// The row's room: a column (board_id), or an SQL expression of the row, which is named as the table
        #[arg(long)]
        room: String,
        /// Columns left out of the events (secrets, large blobs), comma-separated
        #[arg(long, value_delimiter = ',')]
        exclude: Vec<String>,
        /// Deleting a row ends its room (for a table whose rows are the rooms, such as boards)
        #[arg(long)]
        ends_room: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Stop tracking a table (its rooms and their history stay)
    Untrack {
        table: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List the tracked tables, with their room expressions and left-out columns
    Tracked(DatabaseArgs),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; prints an API token (only its hash is stored)
    Add {
        /// The user's name: 1-64 letters, digits, '_', '.' or '-'
        name: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue another token for a user; prints it (and its id on stderr)
    Issue {
        /// The user's name
        user: String,
        /// A label to tell the user's tokens apart
        #[arg(default_value = "")]
        label: String,
        /// The token stops working this many seconds from now (default: never; revoke it when done)
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
        expires_in: Option<u64>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Revoke a token; open connections using it close at once
    Revoke {
        /// The token itself, or its id
        token_or_id: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// List a user's tokens
    List {
        /// The user's name
        user: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project owned by a user; prints its id
    Add {
        /// The project's name
        name: String,
        /// The name of the user who owns it
        owner: String,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Give a user access to a project as ROLE
    Add {
        /// The project's id (a UUID)
        project_id: Uuid,
        /// The user's name
        user: String,
        /// member or owner; without it a new member is a member and an existing one keeps their role
        role: Option<String>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

/// Runs a parsed command line. Without a command, prints the help.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => {
            Cli::command().print_help()?;
            Ok(())
        }
        Some(Command::Serve(args)) => serve((*args).into()).await,
        Some(Command::Migrate(db)) => migrate(&db).await,
        Some(Command::User(UserCommand::Add { name, db })) => {
            let (_, token) = admin::add_user(&migrated(&db).await?, &name).await?;
            println!("{token}");
            Ok(())
        }
        Some(Command::Token(command)) => token(command).await,
        Some(Command::Project(ProjectCommand::Add { name, owner, db })) => {
            println!("{}", admin::add_project(&mut migrated(&db).await?, &name, &owner).await?);
            Ok(())
        }
        Some(Command::Member(MemberCommand::Add { project_id, user, role, db })) => {
            let mut client = migrated(&db).await?;
            let role = admin::add_member(&mut client, project_id, &user, role.as_deref()).await?;
            let article = if role == "owner" { "an" } else { "a" };
            println!("{user} is {article} {role} of {project_id}");
            Ok(())
        }
        Some(Command::Demo(db)) => {
            // `make run` reads these lines with eval: keep them `NAME=value` (tokens are URL- and shell-safe).
            // DEMO_TOKEN is the first user's; DEMO_USERS names them all, DEMO_TOKEN_<name> has each one's.
            let (project, tokens) = admin::demo(&mut migrated(&db).await?).await?;
            println!("DEMO_PROJECT={project}");
            println!("DEMO_TOKEN={}", tokens[0].1);
            println!("DEMO_USERS=\"{}\"", tokens.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(" "));
            for (name, token) in &tokens {
                println!("DEMO_TOKEN_{name}={token}");
            }
            Ok(())
        }
        Some(Command::Watch(args)) => watch::run(args).await,
        Some(Command::Track { table, room, exclude, ends_room, db }) => {
            let t = admin::track(&migrated(&db).await?, &table, &room, &exclude, ends_room).await?;
            println!("tracking {}: room => {}{}", t.table, t.room, excluded(&t.exclude));
            Ok(())
        }
        Some(Command::Untrack { table, db }) => {
            match admin::untrack(&migrated(&db).await?, &table).await? {
                true => println!("{table} is no longer tracked"),
                false => println!("{table} was not tracked"),
            }
            Ok(())
        }
        Some(Command::Tracked(db)) => {
            for t in admin::tracked(&migrated(&db).await?).await? {
                let ends = if t.ends_room { "  (rows end their room)" } else { "" };
                println!("{}  room => {}{}{ends}", t.table, t.room, excluded(&t.exclude));
            }
            Ok(())
        }
    }
}

fn excluded(columns: &[String]) -> String {
    if columns.is_empty() { String::new() } else { format!("  without {}", columns.join(", ")) }
}

async fn migrate(db: &DatabaseArgs) -> Result<()> {
    let applied = db::migrate(&mut connect(db).await?).await?;
    if applied.is_empty() {
        println!("schema is up to date");
    } else {
        println!("applied: {}", applied.join(", "));
    }
    Ok(())
}

async fn token(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Issue { user, label, expires_in, db } => {
            let lifetime = expires_in.map(std::time::Duration::from_secs);
            let (id, token) = admin::issue_token(&migrated(&db).await?, &user, &label, lifetime).await?;
            eprintln!("token id {id}");
            println!("{token}");
        }
        TokenCommand::Revoke { token_or_id, db } => {
            let id = admin::revoke_token(&migrated(&db).await?, &token_or_id).await?;
            println!("revoked token {id}");
        }
        TokenCommand::List { user, db } => {
            for t in admin::list_tokens(&migrated(&db).await?, &user).await? {
                let state = match (t.revoked, t.expired) {
                    (true, _) => "revoked",
                    (false, true) => "expired",
                    (false, false) => "active ",
                };
                let expires = t.expires.map_or_else(|| "no expiry".to_string(), |e| format!("until {e}"));
                println!("{}  {}  {state}  {expires:22}  {}", t.id, t.created, t.label);
            }
        }
    }
    Ok(())
}

async fn connect(db: &DatabaseArgs) -> Result<tokio_postgres::Client> {
    db::connect(&db.database_url).await.map_err(|e| Error::Usage(format!("cannot connect to DATABASE_URL: {e}")))
}

async fn migrated(db: &DatabaseArgs) -> Result<tokio_postgres::Client> {
    let mut client = connect(db).await?;
    db::migrate(&mut client).await?;
    Ok(client)
}

async fn serve(settings: Settings) -> Result<()> {
    crate::process::raise_open_file_limit();
    crate::process::return_large_allocations_to_the_system();
    let app = crate::Application::build(settings).await?;
    app.run_until_stopped(shutdown_signal()).await
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("cannot install a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
