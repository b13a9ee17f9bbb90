//! The example connectors wired to the fake CRM and mailer (and, when
//! asked, the calendar): a scratch folder with crm-source, map-fullname and
//! mailer-sink (and calendar-sink) installed, granted their own fake each,
//! and configured for it.

use causeway::fakes::{self, FakeCalendar, FakeCrm, FakeMailer};
use serde_json::{Map, Value, json};

use super::{RunningHost, Scratch};

/// The CRM's API token (what `env:CRM_TOKEN` resolves to).
pub const CRM_TOKEN: &str = "crm-t0ken-5ecret";
/// The mailer's API key (what `env:MAILER_KEY` resolves to).
pub const MAILER_KEY: &str = "ma1ler-key-5ecret";
/// The mailing list mailer-sink writes to.
pub const LIST: &str = "newsletter";
/// The calendar's API key (what `env:CALENDAR_KEY` resolves to).
pub const CALENDAR_KEY: &str = "ca1endar-key-5ecret";
/// The calendar calendar-sink writes attendees to.
pub const CALENDAR: &str = "team";

/// A scratch host and the two fakes its connectors talk to.
pub struct World {
    /// The host's folder.
    pub scratch: Scratch,
    /// The fake CRM.
    pub crm: FakeCrm,
    /// The fake mailer.
    pub mailer: FakeMailer,
    /// The fake calendar, with calendar-sink installed for it
    /// ([`World::with_calendar`]).
    calendar: Option<FakeCalendar>,
}

impl World {
    /// Installs and grants the connectors; `page_size` is crm-source's,
    /// `extra_grants` and `extra_config` are appended to grants.toml and
    /// causeway.toml.
    pub fn new(page_size: u32, extra_grants: &str, extra_config: &str) -> World {
        let crm = FakeCrm::start(CRM_TOKEN, 0).expect("start the fake CRM");
        let mailer = FakeMailer::start(MAILER_KEY, 0).expect("start the fake mailer");
        let scratch = Scratch::new();
        for (plugin, file) in [
            ("crm-source", "crm-source.wasm"),
            ("map-fullname", "map-fullname.wasm"),
            ("mailer-sink", "mailer-sink.wasm"),
        ] {
            scratch.install(plugin, file);
        }
        scratch.grants(&format!(
            "{}\n{extra_grants}",
            fakes::connector_grants(&crm, &mailer, "env:CRM_TOKEN", "env:MAILER_KEY")
        ));
        std::fs::write(
            scratch.path().join("causeway.toml"),
            format!(
                "{}\n{extra_config}",
                fakes::connector_config(&crm, &mailer, LIST, page_size)
            ),
        )
        .expect("write causeway.toml");
        World {
            scratch,
            crm,
            mailer,
            calendar: None,
        }
    }

    /// [`World::new`], and calendar-sink installed, granted and configured
    /// for a fake calendar of its own.
    pub fn with_calendar(page_size: u32, extra_grants: &str, extra_config: &str) -> World {
        let calendar =
            FakeCalendar::start(CALENDAR_KEY, &[CALENDAR], 0).expect("start the fake calendar");
        let grants = format!(
            "{}\n{extra_grants}",
            fakes::calendar_grants(&calendar, "env:CALENDAR_KEY")
        );
        let config = format!(
            "{}\n{extra_config}",
            fakes::calendar_config(&calendar, CALENDAR)
        );
        let mut world = World::new(page_size, &grants, &config);
        world.scratch.install("calendar-sink", "calendar-sink.wasm");
        world.calendar = Some(calendar);
        world
    }

    /// The fake calendar.
    ///
    /// # Panics
    /// When the world was made without one.
    pub fn calendar(&self) -> &FakeCalendar {
        self.calendar
            .as_ref()
            .expect("a world made by World::with_calendar")
    }

    /// `causeway` in the scratch folder, with both secrets in its environment.
    pub fn causeway(&self) -> std::process::Command {
        let mut command = self.scratch.causeway();
        command
            .env("CRM_TOKEN", CRM_TOKEN)
            .env("MAILER_KEY", MAILER_KEY)
            .env("CALENDAR_KEY", CALENDAR_KEY);
        command
    }

    /// `causeway run` on a free port.
    pub fn start(&self) -> RunningHost {
        RunningHost::start(self.causeway().args(["run", "--listen", "127.0.0.1:0"]))
    }
}

/// A CRM contact's fields.
pub fn person(first: &str, last: &str, email: &str) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("firstName".into(), json!(first));
    fields.insert("lastName".into(), json!(last));
    fields.insert("email".into(), json!(email));
    fields
}
