//! What the fuzz targets share.

/// fjord-model catches fhirbolt's panics on malformed input and answers an error, as the server
/// does; only other panics are crashes. Installed once, in a target's `init`.
pub fn ignore_caught_parser_panics() {
    let aborting = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info
            .location()
            .is_some_and(|l| l.file().contains("fhirbolt"))
        {
            aborting(info);
        }
    }));
}
