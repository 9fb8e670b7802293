//! The database: the connection pool used by the API and the feed's history reads, dedicated connections
//! (the listener's), and the schema in `sql/`, compiled into the binary so `boardcast migrate` needs no files
//! at run time.

mod migrate;
mod pool;

pub use migrate::{FUNCTIONS, MIGRATIONS, Migration, migrate};
pub use pool::{connect, pg_config, pool};
