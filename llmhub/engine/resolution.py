"""Which upstreams and models answer a requested name (DESIGN §4).

Rules, in order: `x:latest` is `x` unless something knows the whole name (Ollama's
tag); `[aliases]` are followed to their end (config.py refuses cycles), an exact name
before a pattern with `*` (`claude-* = deep`); a `[pool:NAME]` name is its targets;
`NAME:model` picks upstream NAME, and `lm:model` the LM Studio upstream (the seed's
prefix); with `[routing] discover`, a bare name that several upstreams' last probes listed
is a pool of them (the default upstream first); anything else goes to the default
upstream. `[fallbacks]` of any name on the alias chain follow as further pools, without
repeats. An alias named in `[models] stand_in` (or on the chain of one) whose model its
upstream's last probe did not list goes to a model that upstream has loaded instead
(routing.Router.stand_in), and says so once in the log; the reply names the model used.
With no name at all, `[models] default`, else the first model the upstream lists
(cached for `models_cache_seconds`). Which target of a pool answers is routing.py's.
"""

import logging
import time
from dataclasses import replace
from fnmatch import fnmatchcase

from llmhub.config import Config
from llmhub.engine.routing import Router, Target
from llmhub.errors import BadRequest, UpstreamError
from llmhub.upstream.base import Upstream
from llmhub.upstream.think import wants_split

__all__ = ["Target", "Resolver"]

log = logging.getLogger("llmhub.models")


class Resolver:
    models_cache_seconds = 30   # how long an upstream's model list answers "default model"

    def __init__(self, config: Config, upstreams: dict[str, Upstream], router: Router) -> None:
        self.config = config
        self.upstreams = upstreams
        self.router = router
        self.default_upstream = next(iter(upstreams.values()))
        self._listed: dict[str, tuple[float, list]] = {}
        self._stood_in: dict[tuple, str] = {}   # (upstream, missing model) → stand-in logged:
                                                # keyed by configured targets, so bounded
        self.pools = {name: [Target(upstreams[m.upstream], m.model, m.weight, m.tier,
                                    m.max_concurrent) for m in members]
                      for name, members in config.pools.items()}

    def alias_chain(self, name: str) -> list[str]:
        chain = [name]
        while (target := self._alias(chain[-1])) is not None and target not in chain:
            chain.append(target)
        return chain

    def _alias(self, name: str) -> str | None:
        """The alias of a name: an exact entry, else the first pattern (`claude-*`) that
        matches it (config.py refuses cycles of exact names; a pattern stops at a repeat)."""
        aliases = self.config.aliases
        if name in aliases:
            return aliases[name]
        return next((target for pattern, target in aliases.items()
                     if "*" in pattern and fnmatchcase(name, pattern)), None)

    def resolve(self, requested: str | None) -> list[list[Target]]:
        """The pool for a requested name, then its fallbacks' pools, without repeats."""
        chain = self.alias_chain(self.untagged(requested or self.config.models.default))
        pools = [self.chain_pool(chain)]
        for step in chain:
            if step in self.config.fallbacks:
                pools += [self.chain_pool(self.alias_chain(f))
                          for f in self.config.fallbacks[step]]
                break
        seen, out = set(), []
        for pool in pools:
            pool = [t for t in pool if t not in seen]
            seen.update(pool)
            if pool:
                out.append(pool)
        return out

    def chain_pool(self, chain: list[str]) -> list[Target]:
        """The pool an alias chain ends in, or its stand-in ([models] stand_in)."""
        pool = self.pool(chain[-1])
        if len(chain) < 2 or len(pool) != 1 or not self.config.models.stand_in:
            return pool
        target = pool[0]
        model = self.router.stand_in(target)     # first: mostly None, and cheaper
        if model is None or not self.stands_in(chain):
            return pool
        key = (target.upstream.name, target.model)
        if self._stood_in.get(key) != model:       # once, and again when it changes
            self._stood_in[key] = model
            log.warning("alias %s: %s not on upstream %s; using %s", chain[-2], target.model,
                        target.upstream.name, model)
        return [replace(target, model=model)]     # its weight, tier and slots kept

    def stands_in(self, chain: list[str]) -> bool:
        """Whether an alias on the chain (not its end, a model) is one `[models] stand_in`
        names (a pattern may: claude-*)."""
        patterns = self.config.models.stand_in
        return any(fnmatchcase(name, pattern) for name in chain[:-1] for pattern in patterns)

    def untagged(self, name: str) -> str:
        """`x:latest`, as Ollama's clients name what /api/tags lists (and then ask for on
        any route: Copilot chats through /v1/chat/completions), is `x`; unless the whole
        name is known: an alias, a pool, or a model a box lists (an Ollama upstream's)."""
        if not name.endswith(":latest") or name in self.config.aliases or \
                name in self.pools or self.router.listing(name):
            return name
        return name.removesuffix(":latest")

    def pool(self, name: str) -> list[Target]:
        if name in self.pools:
            return self.pools[name]
        target = self.target(name)
        if target.upstream is self.default_upstream and self.config.routing.discover \
                and name:
            listing = self.router.listing(name)
            if len(listing) > 1 or (listing and listing[0] is not self.default_upstream):
                ordered = sorted(listing, key=lambda u: u is not self.default_upstream)
                return [Target(u, name) for u in ordered]
        return [target]

    def target(self, name: str) -> Target:
        prefix, sep, rest = name.partition(":")
        if sep and prefix in self.upstreams:
            return Target(self.upstreams[prefix], rest)
        if sep and prefix == "lm":
            lmstudio = [u for u in self.upstreams.values() if u.kind == "lmstudio"]
            return Target((lmstudio or [self.default_upstream])[0], rest)
        return Target(self.default_upstream, name)

    def default_model(self, upstream: Upstream) -> str:
        """The first model an upstream lists, when neither request nor config names one."""
        listed_at, models = self._listed.get(upstream.name, (0.0, []))
        if time.monotonic() - listed_at > self.models_cache_seconds or not models:
            models = [m["id"] for m in upstream.list_models()]
            self._listed[upstream.name] = (time.monotonic(), models)
        if not models:
            raise BadRequest(f"No model was given, [models] default is not set, and "
                             f"{upstream.label} lists no models", param="model",
                             code="model_not_found")
        return models[0]

    def thinks_in_tags(self, model: str) -> bool:
        """Whether this model's `<think>` block is split out as reasoning (think_tags)."""
        return wants_split(model, self.config.models.think_tags)

    def inlines_thinking(self, model: str) -> bool:
        """Whether this model's reasoning is sent as `<think>` text (think_inline)."""
        return wants_split(model, self.config.models.think_inline)

    def upstream_for(self, model: str | None) -> Upstream:
        """The upstream that would answer a request for `model` (its first target)."""
        return self.resolve(model)[0][0].upstream

    def refusal(self, model: str | None, media_type: str) -> str | None:
        """Why the upstream that would answer `model` cannot take an image of this type."""
        refuses = getattr(self.upstream_for(model), "image_refusal", None)
        return refuses(media_type) if refuses is not None else None

    def list_models(self) -> tuple[list[dict], list[UpstreamError]]:
        """Every upstream's models, each id once (several boxes serving one model is one
        model to a client), then each pool once, naming its targets; the upstreams that
        could not say, as errors."""
        models: dict[str, dict] = {}
        errors = []
        for upstream in self.upstreams.values():
            try:
                listed = upstream.list_models()
            except UpstreamError as exc:
                errors.append(exc)
                continue
            self._listed[upstream.name] = (time.monotonic(), [m["id"] for m in listed])
            for model in listed:
                models.setdefault(model["id"], model)
        for name, pool in self.pools.items():
            entry = models.setdefault(name, {"id": name, "object": "model", "created": 0,
                                             "owned_by": "llmhub"})
            models[name] = dict(entry, pool=[f"{t.upstream.name}:{t.model}" for t in pool])
        return list(models.values()), errors

    def probe_all(self) -> list[dict]:
        return [{"name": u.name, "kind": u.kind, "base_url": u.base_url, **u.probe()}
                for u in self.upstreams.values()]
