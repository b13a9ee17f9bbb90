//! Guest bindings for every Causeway world, generated once here so that plugin
//! crates never mention `wit_bindgen`.
//!
//! Each single world gets its own module and a public export macro (used by
//! [`crate::plugin!`]); a plugin of several worlds invokes several of them, and
//! `wit-component` unions the worlds. (Generating the combined worlds here too
//! would define each interface's export macro twice.) The imported interfaces
//! are generated once, in [`source`], and shared by the other worlds through `with`, so a
//! `Record` is one type whichever world a plugin targets. Imports a plugin
//! never calls are dropped from its component by `wit-component`, which is why
//! a transform built with this SDK imports no `http` and no `storage`.

#![allow(missing_docs, clippy::all)]

/// The `source-plugin` world, and every capability import.
pub mod source {
    wit_bindgen::generate!({
        path: "../wit",
        world: "causeway:plugin/source-plugin@0.1.0",
        runtime_path: "::causeway_sdk::__wit_bindgen::rt",
        default_bindings_module: "::causeway_sdk::bindings::source",
        pub_export_macro: true,
        export_macro_name: "__export_source",
        // Records and answers compare in plugin authors' unit tests.
        additional_derives: [PartialEq],
    });
}

/// A connector world: every capability import is shared with [`source`].
macro_rules! connector_world {
    ($(#[$doc:meta])* $module:ident, $world:literal, $bindings_module:literal, $macro_name:literal) => {
        $(#[$doc])*
        pub mod $module {
            wit_bindgen::generate!({
                path: "../wit",
                world: $world,
                runtime_path: "::causeway_sdk::__wit_bindgen::rt",
                default_bindings_module: $bindings_module,
                pub_export_macro: true,
                export_macro_name: $macro_name,
                with: {
                    "causeway:plugin/types@0.1.0": crate::bindings::source::causeway::plugin::types,
                    "causeway:plugin/http@0.1.0": crate::bindings::source::causeway::plugin::http,
                    "causeway:plugin/storage@0.1.0": crate::bindings::source::causeway::plugin::storage,
                    "causeway:plugin/config@0.1.0": crate::bindings::source::causeway::plugin::config,
                    "causeway:plugin/log@0.1.0": crate::bindings::source::causeway::plugin::log,
                },
            });
        }
    };
}

connector_world!(
    /// The `sink-plugin` world.
    sink, "causeway:plugin/sink-plugin@0.1.0", "::causeway_sdk::bindings::sink", "__export_sink"
);
connector_world!(
    /// The `webhook-plugin` world.
    webhook, "causeway:plugin/webhook-plugin@0.1.0", "::causeway_sdk::bindings::webhook", "__export_webhook"
);

/// The `transform-plugin` world: no `http`, no `storage`.
pub mod transform {
    wit_bindgen::generate!({
        path: "../wit",
        world: "causeway:plugin/transform-plugin@0.1.0",
        runtime_path: "::causeway_sdk::__wit_bindgen::rt",
        default_bindings_module: "::causeway_sdk::bindings::transform",
        pub_export_macro: true,
        export_macro_name: "__export_transform",
        with: {
            "causeway:plugin/types@0.1.0": crate::bindings::source::causeway::plugin::types,
            "causeway:plugin/config@0.1.0": crate::bindings::source::causeway::plugin::config,
            "causeway:plugin/log@0.1.0": crate::bindings::source::causeway::plugin::log,
        },
    });
}
