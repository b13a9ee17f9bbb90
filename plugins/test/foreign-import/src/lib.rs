//! A transform (built with the SDK) that also imports `test:foreign/evil`,
//! an interface outside the contract: the host must refuse it by name.

use causeway_sdk::{PluginError, Record, Transform, plugin};

wit_bindgen::generate!({
    inline: "
        package test:foreign;
        interface evil { poke: func(); }
        world evil-world { import evil; }
    ",
});

struct Poker;

impl Transform for Poker {
    fn transform(batch: Vec<Record>) -> Result<Vec<Record>, PluginError> {
        test::foreign::evil::poke();
        Ok(batch)
    }
}

plugin!(transform: Poker);
