//! The `boardcast` command line: serve, migrate, and the operator commands.

pub mod watch;

use uuid::Uuid;

use crate::admin;
use crate::config::Settings;
use crate::db;
use crate::error::{Error, Result};

pub const USAGE: &str = "\
boardcast — a real-time feed of a PostgreSQL-backed project board

USAGE:
  boardcast serve                               run the server (BOARDCAST_ADDR, default 127.0.0.1:8080)
  boardcast migrate                             apply the schema in sql/ (idempotent; serve does it too)
  boardcast user add NAME                       create a user; prints an API token
  boardcast token issue USER [LABEL]            issue another token for USER; prints it
  boardcast token revoke TOKEN_OR_ID            revoke a token (open connections using it close at once)
  boardcast token list USER                     list USER's tokens
  boardcast project add NAME OWNER              create a project owned by user OWNER; prints its id
  boardcast member add PROJECT_ID USER [ROLE]   give USER access to a project as ROLE (member or owner); without
                                                ROLE a new member is a member and an existing one keeps their role
  boardcast demo                                create the demo user and project if absent; prints a token
  boardcast watch PROJECT_ID [--token T] [--url ws://HOST:PORT/ws] [--since N]
                                                join a project's room and print each event as it arrives
                                                (the token may also come from BOARDCAST_TOKEN)

The database is DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/boardcast).";

pub async fn run(args: Vec<String>) -> Result<()> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["serve"] => serve().await,
        ["migrate"] => {
            let mut client = connect().await?;
            let applied = db::migrate(&mut client).await?;
            if applied.is_empty() {
                println!("schema is up to date");
            } else {
                println!("applied: {}", applied.join(", "));
            }
            Ok(())
        }
        ["user", "add", name] => {
            let client = migrated().await?;
            let (_, token) = admin::add_user(&client, name).await?;
            println!("{token}");
            Ok(())
        }
        ["token", "issue", user, rest @ ..] if rest.len() <= 1 => {
            let client = migrated().await?;
            let (id, token) = admin::issue_token(&client, user, rest.first().copied().unwrap_or("")).await?;
            eprintln!("token id {id}");
            println!("{token}");
            Ok(())
        }
        ["token", "revoke", token] => {
            let client = migrated().await?;
            let id = admin::revoke_token(&client, token).await?;
            println!("revoked token {id}");
            Ok(())
        }
        ["token", "list", user] => {
            let client = migrated().await?;
            for (id, label, created, revoked) in admin::list_tokens(&client, user).await? {
                println!("{id}  {created}  {}  {label}", if revoked { "revoked" } else { "active " });
            }
            Ok(())
        }
        ["project", "add", name, owner] => {
            let mut client = migrated().await?;
            println!("{}", admin::add_project(&mut client, name, owner).await?);
            Ok(())
        }
        ["member", "add", project, user, rest @ ..] if rest.len() <= 1 => {
            let project = parse_project(project)?;
            let mut client = migrated().await?;
            let role = admin::add_member(&mut client, project, user, rest.first().copied()).await?;
            let article = if role == "owner" { "an" } else { "a" };
            println!("{user} is {article} {role} of {project}");
            Ok(())
        }
        ["demo"] => {
            let mut client = migrated().await?;
            let (project, token) = admin::demo(&mut client).await?;
            println!("DEMO_PROJECT={project}");
            println!("DEMO_TOKEN={token}");
            Ok(())
        }
        ["watch", project, rest @ ..] => watch::run(parse_project(project)?, rest).await,
        [] | ["help"] | ["--help"] | ["-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(Error::Usage(format!("unknown command: boardcast {}\n\n{USAGE}", args.join(" ")))),
    }
}

fn parse_project(s: &str) -> Result<Uuid> {
    s.parse().map_err(|_| Error::Usage(format!("{s:?} is not a project id (a UUID)")))
}

async fn connect() -> Result<tokio_postgres::Client> {
    let url = Settings::from_env()?.database_url;
    db::connect(&url).await.map_err(|e| Error::Usage(format!("cannot connect to DATABASE_URL: {e}")))
}

async fn migrated() -> Result<tokio_postgres::Client> {
    let mut client = connect().await?;
    db::migrate(&mut client).await?;
    Ok(client)
}

async fn serve() -> Result<()> {
    crate::process::raise_open_file_limit();
    crate::process::return_large_allocations_to_the_system();
    let settings = Settings::from_env()?;
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
