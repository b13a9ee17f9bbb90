//! A component that exports no Causeway world, only an interface of its own.

wit_bindgen::generate!({
    inline: "
        package test:other;
        interface thing { ping: func() -> u32; }
        world other { export thing; }
    ",
});

struct Thing;

impl exports::test::other::thing::Guest for Thing {
    fn ping() -> u32 {
        7
    }
}

export!(Thing);
