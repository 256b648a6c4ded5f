//! The lifecycle steps every task tool takes, each a `-v` line with its duration: `plan`
//! (every choice made before load, its transport included), `open`, `configure` (the common
//! rodata, then the tool's), `load`, then `event buffer` and `attach` in [`Runtime::stream`] (or
//! `attach` alone for tools that count in the kernel).

use std::mem::MaybeUninit;

use libbpf_rs::OpenObject;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};

use super::{CommonOpen, Runtime, Transport};
use crate::error::Error;

impl Runtime {
    /// The `plan` step: `f` decides every choice before load and says which with -v.
    pub fn plan<T>(&self, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
        self.step("plan", f)
    }

    /// The transport of a streaming tool, decided in its plan and said with -v.
    pub fn plan_transport(&self) -> Result<Transport, Error> {
        let t = self.transport()?;
        self.say(format_args!("transport: {t:?}"));
        Ok(t)
    }

    /// open → configure → load: opens the tool's skeleton, writes the common configuration
    /// (filter, transport, stacks), lets `setup` write the tool's rodata and choose its programs
    /// (between open and load, while rodata is writable), then loads it.
    pub fn open_load<'o, B>(
        &self,
        tool: &'static str,
        builder: B,
        storage: &'o mut MaybeUninit<OpenObject>,
        transport: Transport,
        setup: impl FnOnce(&mut B::Output) -> Result<(), Error>,
    ) -> Result<<B::Output as OpenSkel<'o>>::Output, Error>
    where
        B: SkelBuilder<'o>,
        B::Output: CommonOpen,
    {
        let mut open = self.open(tool, builder, storage)?;
        self.step("configure", || {
            self.configure(&mut open, transport)?;
            setup(&mut open)
        })?;
        self.load(tool, open)
    }
}
