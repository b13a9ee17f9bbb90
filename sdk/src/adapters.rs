//! Bridges the generated `Guest` traits of each world to the SDK's traits, so
//! the [`crate::plugin!`] macro can export any plugin type without generating
//! code in the plugin's crate.

use std::marker::PhantomData;

use crate::bindings;
use crate::{IncomingRequest, Page, PluginError, Record, StreamInfo, WriteOutcome};

/// The exported type for a plugin `T`: it implements every world's `Guest`
/// trait whose SDK trait `T` implements.
pub struct Export<T>(PhantomData<fn() -> T>);

/// Implements one generated export interface by delegating to an SDK trait.
macro_rules! source_guest {
    ($($world:ident),*) => {$(
        impl<T: crate::Source> bindings::$world::exports::causeway::plugin::source::Guest for Export<T> {
            fn check() -> Result<(), PluginError> {
                T::check()
            }
            fn discover() -> Result<Vec<StreamInfo>, PluginError> {
                T::discover()
            }
            fn read(stream: String, checkpoint: Option<String>) -> Result<Page, PluginError> {
                T::read(stream, checkpoint)
            }
        }
    )*};
}

macro_rules! sink_guest {
    ($($world:ident),*) => {$(
        impl<T: crate::Sink> bindings::$world::exports::causeway::plugin::sink::Guest for Export<T> {
            fn check() -> Result<(), PluginError> {
                T::check()
            }
            fn write(batch: Vec<Record>) -> Result<Vec<WriteOutcome>, PluginError> {
                T::write(batch)
            }
        }
    )*};
}

macro_rules! webhook_guest {
    ($($world:ident),*) => {$(
        impl<T: crate::Webhook> bindings::$world::exports::causeway::plugin::webhook::Guest for Export<T> {
            fn handle(request: IncomingRequest) -> Result<Vec<Record>, PluginError> {
                T::handle(request)
            }
        }
    )*};
}

source_guest!(source);
sink_guest!(sink);
webhook_guest!(webhook);

impl<T: crate::Transform> bindings::transform::exports::causeway::plugin::transform::Guest
    for Export<T>
{
    fn transform(batch: Vec<Record>) -> Result<Vec<Record>, PluginError> {
        T::transform(batch)
    }
}
