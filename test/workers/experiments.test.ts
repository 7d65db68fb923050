// Experiments on the ranking path (docs/experiments.md#serving): the document as an admin resource, and what an
// arm does to the next answer — holdout and `popular` variants answer the non-personal list, a `ranker` variant
// ranks with its own weights, an interleave experiment merges both variants' lists by team draft; the arm is sticky
// and follows the visitor's anonymous id across a login. Visitors are picked by their bucket (src/experiments/
// assign.ts, unit-tested against hand-computed hashes) so that each test knows which arm to expect.
import { env, exports } from "cloudflare:workers";
import { afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { assign } from "../../src/experiments/assign.ts";
import { EXPERIMENTS_KEY, type Experiment, parseExperiments } from "../../src/experiments/config.ts";
import { EXPOSURE_EVENT, EXPOSURE_SOURCE } from "../../src/experiments/exposure.ts";
import { EXPOSURE_BATCH_MAX } from "../../src/experiments/exposure-buffer.ts";
import { UNIT_UNKNOWN } from "../../src/experiments/serve.ts";
import { DEFAULT_RANKING_CONFIG, RANKING_CONFIG_KEY } from "../../src/rank/config.ts";
import { depsFromEnv } from "../../src/rank/deps.ts";
import { parseRankParams } from "../../src/rank/request.ts";
import { answer, type RankDeps } from "../../src/rank/service.ts";
import { EVENT_STREAM, STREAM_FIELDS } from "../../src/session/stream.ts";
import { ADMIN_KEY, adminGet, basic, collect, redis, refused, streamedEvent, WRITE_KEY } from "./collect-helpers.ts";
import {
  type Answer,
  appFetch,
  BASE,
  forgetDocs,
  get,
  ids,
  ok,
  publishFixture,
  resetCaches,
  SERVER_KEY,
  settled,
  shopFixture,
  track,
} from "./rank-helpers.ts";

const shop = shopFixture(`x${crypto.randomUUID().slice(0, 8)}`);
const id = shop.id;

function putDoc(path: string, body: unknown, key: string | null = ADMIN_KEY): Promise<Response> {
  return exports.default.fetch(
    new Request(`${BASE}${path}`, {
      method: "PUT",
      headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify(body),
    }),
  );
}

const put = (body: unknown, key?: string | null) => putDoc("/v1/admin/experiments", body, key);
const putRankingConfig = (body: unknown) => putDoc("/v1/admin/ranking-config", body);

async function putOk(body: unknown): Promise<{ version: string }> {
  const res = await put(body);
  const text = await res.text();
  expect(res.status, text).toBe(200);
  return JSON.parse(text) as { version: string };
}

/** The parsed experiment as the service will see it (defaults filled). */
function parsed(doc: unknown, n = 0): Experiment {
  const r = parseExperiments(doc, "t");
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return r.config.experiments[n] as Experiment;
}

/** The first anonymous id `v-<tag>-<i>` whose bucket puts it in `arm`. */
function visitorIn(experiment: Experiment, arm: string, tag: string): string {
  for (let i = 0; i < 10_000; i++) {
    const anon = `v-${tag}-${i}`;
    if (assign(experiment, `a:${anon}`).arm === arm) return anon;
  }
  throw new Error(`no visitor in ${arm}`);
}

const HOME_AB = {
  experiments: [
    {
      id: "home-ab",
      placement: "home",
      holdout: 0.2,
      variants: [
        { id: "control", ranker: { kind: "popular" } },
        { id: "treatment", ranker: { kind: "ranker", weights: { batch: 50 } } },
      ],
    },
  ],
};

beforeAll(async () => {
  // alice's batch list b1, b2 makes a personal list differ from the non-personal one.
  await publishFixture(shop);
});

afterEach(async () => {
  await forgetDocs(EXPERIMENTS_KEY, RANKING_CONFIG_KEY);
  resetCaches();
});

/** The first user id `<prefix>-<i>` whose own key `u:<id>` is in `arm` (to tell a user's key from the unit used). */
function userIn(experiment: Experiment, arm: string, prefix: string): string {
  for (let i = 0; i < 10_000; i++) if (assign(experiment, `u:${prefix}-${i}`).arm === arm) return `${prefix}-${i}`;
  throw new Error(`no user in ${arm}`);
}

describe("the experiments document", () => {
  it("is versioned, readable by version, and refused with the paths of its problems", async () => {
    expect(await putOk(HOME_AB)).toMatchObject({ version: "v1" });
    expect(await putOk(HOME_AB)).toMatchObject({ version: "v2" });
    const active = (await (await adminGet("/v1/admin/experiments")).json()) as { version: string; active: boolean };
    expect(active).toMatchObject({ version: "v2", active: true });
    expect((await adminGet("/v1/admin/experiments?version=v1")).status).toBe(200);
    const bad = await put({ experiments: [{ id: "Bad Id", placement: "home", variants: [] }] });
    expect(bad.status).toBe(400);
    const body = (await bad.json()) as { error: { code: string; issues: Array<{ path: string }> } };
    expect(body.error.code).toBe("validation_failed");
    expect(body.error.issues.map((i) => i.path)).toEqual(
      expect.arrayContaining(["experiments[0].id", "experiments[0].variants"]),
    );
  });

  it("a report per arm from Postgres; unknown experiments and bad parameters are refused", async () => {
    const fresh = `fresh-${crypto.randomUUID().slice(0, 8)}`;
    await putOk({ experiments: [{ ...HOME_AB.experiments[0], id: fresh }] });
    const res = await adminGet(`/v1/admin/experiments/${fresh}/report?model=any&clickWindow=1800`);
    const text = await res.text();
    expect(res.status, text).toBe(200);
    const report = JSON.parse(text) as {
      version: string;
      options: { model: string; clickWindowMs: number; purchaseWindowMs: number };
      arms: Array<{ arm: string; share: number; visitors: number }>;
      srm: unknown;
      crossed: unknown;
    };
    expect(report.version).toBe("v1");
    expect(report.options).toEqual({ model: "any", clickWindowMs: 1_800_000, purchaseWindowMs: 86_400_000 });
    // Holdout 0.2, then the two variants' equal halves of the rest; no exposures yet, so no SRM check.
    expect(report.arms.map((a) => [a.arm, a.share, a.visitors])).toEqual([
      ["holdout", 0.2, 0],
      ["control", 0.4, 0],
      ["treatment", 0.4, 0],
    ]);
    expect(report.srm).toBeNull();
    // Nobody exposed in two arms yet (docs/experiments.md#report).
    expect(report.crossed).toEqual({ visitors: 0, exposures: 0 });
    await refused(adminGet("/v1/admin/experiments/nope/report"), 404, "not_found");
    await refused(adminGet(`/v1/admin/experiments/${fresh}/report?model=first`), 400, "bad_request");
    await refused(adminGet(`/v1/admin/experiments/${fresh}/report?clickWindow=5`), 400, "bad_request");
  });

  it("refuses an experiment that can still run on a placement the active ranking config lacks", async () => {
    const on = (placement: string, extra: Record<string, unknown> = {}) => ({
      ...HOME_AB.experiments[0],
      id: `on-${placement}`,
      placement,
      ...extra,
    });
    // The ranking path refuses such a placement: the experiment could never be served.
    await refused(get("/v1/recommendations?placement=hmoe&anonymousId=v1"), 400, "validation_failed");
    const typo = await refused(put({ experiments: [on("home"), on("hmoe")] }), 400, "validation_failed");
    expect(typo.error.issues).toEqual([
      { path: "experiments[1].placement", message: expect.stringMatching(/^hmoe is not a placement of the active/) },
    ]);
    // A placement the ranking config adds, the modes' lists, and an ended experiment (kept for its report) pass.
    expect((await putRankingConfig({ placements: { landing: {} } })).status).toBe(200);
    await putOk({
      experiments: [on("landing"), on("similar"), on("rerank"), on("hmoe", { end: "2020-01-08T00:00:00Z" })],
    });
  });

  it("a ranking config that drops the placement of an experiment that can still run is refused", async () => {
    expect((await putRankingConfig({ placements: { landing: {} } })).status).toBe(200);
    const landing = { ...HOME_AB.experiments[0], id: "landing-ab", placement: "landing" };
    await putOk({ experiments: [landing] });
    const dropped = await refused(putRankingConfig({ maxLimit: 40 }), 400, "validation_failed");
    expect(dropped.error.issues).toEqual([
      { path: "placements.landing", message: expect.stringMatching(/^missing: experiments\[0\] \(landing-ab\)/) },
    ]);
    const active = (await (await adminGet("/v1/admin/ranking-config")).json()) as {
      config: { placements: Record<string, unknown>; maxLimit: number };
    };
    expect(Object.keys(active.config.placements)).toContain("landing");
    expect(active.config.maxLimit).toBe(50);
    // Once the experiment has ended, the placement may go.
    await putOk({ experiments: [{ ...landing, end: "2020-01-08T00:00:00Z" }] });
    expect((await putRankingConfig({ maxLimit: 40 })).status).toBe(200);
  });

  it("a ranking config that drops nothing is taken, even beside an experiment whose placement the active one lacks", async () => {
    await putOk(HOME_AB);
    // The document as a PUT that raced a ranking-config change (or one stored before placements were checked) left
    // it: its experiment on a placement no config has.
    const text = (await env.ONLINE_STORE.get(EXPERIMENTS_KEY)) ?? "";
    expect(text).toContain('"placement":"home"');
    await env.ONLINE_STORE.put(EXPERIMENTS_KEY, text.replace('"placement":"home"', '"placement":"hmoe"'));
    resetCaches();
    expect((await putRankingConfig({ maxLimit: 40 })).status).toBe(200);
  });

  it("needs the admin key", async () => {
    await refused(put(HOME_AB, SERVER_KEY), 401, "unauthorized");
    await refused(put(HOME_AB, null), 401, "unauthorized");
  });
});

describe("arms on the ranking path", () => {
  it("holdout and the popular variant answer the non-personal list; the ranker variant the personal one", async () => {
    await putOk(HOME_AB);
    const e = parsed(HOME_AB);
    const nonPersonal = ids(await ok(get("/v1/recommendations?placement=home")));
    for (const arm of ["holdout", "control"]) {
      const anon = visitorIn(e, arm, arm);
      const a = await ok(get(`/v1/recommendations?placement=home&userId=${id("alice")}&anonymousId=${anon}`));
      expect(a.experiment).toMatchObject({ id: "home-ab", arm, mode: "split", version: "v1" });
      // alice's batch items are not in it: her data is not used.
      expect(ids(a)).toEqual(nonPersonal);
      expect(ids(a)).not.toContain(id("b1"));
    }
    const anon = visitorIn(e, "treatment", "treatment");
    const t = await ok(
      get(`/v1/recommendations?placement=home&userId=${id("alice")}&anonymousId=${anon}&explain=true`),
    );
    expect(t.experiment).toMatchObject({ id: "home-ab", arm: "treatment" });
    // The variant's weights: b1 = batch 50 × 1.
    expect(t.items[0]).toMatchObject({ productId: id("b1"), score: 50, contributions: { batch: 50 } });
  });

  it("is sticky, and a login keeps the arm of the anonymous id the visitor came with", async () => {
    await putOk(HOME_AB);
    const e = parsed(HOME_AB);
    const anon = visitorIn(e, "control", "sticky");
    const before = await ok(get(`/v1/recommendations?placement=home&anonymousId=${anon}`));
    const again = await ok(get(`/v1/recommendations?placement=home&anonymousId=${anon}`));
    const loggedIn = await ok(get(`/v1/recommendations?placement=home&userId=${id("alice")}&anonymousId=${anon}`));
    for (const a of [before, again, loggedIn]) expect(a.experiment?.arm).toBe("control");
    // No visitor id, no experiment: the placement's usual list.
    expect((await ok(get("/v1/recommendations?placement=home"))).experiment).toBeNull();
    // Another placement has no experiment running.
    expect((await ok(get(`/v1/similar/${id("p1")}?anonymousId=${anon}`))).experiment).toBeNull();
  });

  it("an identity merge keeps the arm: a user named alone is assigned by the visitor merged into it", async () => {
    await putOk(HOME_AB);
    const e = parsed(HOME_AB);
    // A visitor in control browses, then logs in (the event carries both ids: the visitor merges into the user).
    const anon = visitorIn(e, "control", "merge");
    // A user whose own key is in another arm: otherwise the test could not tell the two apart.
    const tag = crypto.randomUUID().slice(0, 8);
    let user = "";
    for (let i = 0; !user || assign(e, `u:${user}`).arm === "control"; i++) user = `merge-user-${tag}-${i}`;
    await track({ anonymousId: anon }, [{ event: "Product Viewed", properties: { product_id: id("p1") } }]);
    await track({ userId: user, anonymousId: anon }, [
      { event: "Product Viewed", properties: { product_id: id("s1") } },
    ]);
    const a = await settled(() => ok(get(`/v1/recommendations?placement=home&userId=${user}`)));
    expect(a.userKey).toBe(`u:${user}`);
    expect(a.experiment?.arm).toBe("control");
  });

  it("a user on two devices gets one arm: the anonymous id merged into them first, not each device's", async () => {
    await putOk(HOME_AB);
    const e = parsed(HOME_AB);
    const tag = crypto.randomUUID().slice(0, 8);
    const phone = visitorIn(e, "control", `phone-${tag}`);
    const laptop = visitorIn(e, "treatment", `laptop-${tag}`);
    const user = `multi-${tag}`;
    // The login on the phone merges the phone's anonymous id into the user.
    await track({ userId: user, anonymousId: phone }, [
      { event: "Product Viewed", properties: { product_id: id("p1") } },
    ]);
    const onPhone = await settled(() =>
      ok(get(`/v1/recommendations?placement=home&userId=${user}&anonymousId=${phone}&limit=3`)),
    );
    const onLaptop = await settled(() =>
      ok(get(`/v1/recommendations?placement=home&userId=${user}&anonymousId=${laptop}&limit=3`)),
    );
    expect(onPhone.experiment?.arm).toBe("control");
    expect(onLaptop.experiment?.arm).toBe("control");
    // Both exposures go under the user and name the unit they were assigned by.
    for (const a of [onPhone, onLaptop]) {
      const event = await streamedEvent(`exposure-${a.recId}`, `u:${user}`);
      expect(event).toMatchObject({ userId: user, properties: { arm: "control", unit: `a:${phone}` } });
    }
  });

  it("a user named alone whose session read fails is in no experiment: the normal list, flagged, no exposure", async () => {
    const e = parsed(HOME_AB);
    const tag = crypto.randomUUID().slice(0, 8);
    const anon = visitorIn(e, "control", `lost-${tag}`);
    const user = userIn(e, "treatment", `lost-user-${tag}`);
    await track({ userId: user, anonymousId: anon }, [
      { event: "Product Viewed", properties: { product_id: id("p1") } },
    ]);
    const exposed: string[] = [];
    const deps = (patch: Partial<RankDeps> = {}): RankDeps => {
      const real = depsFromEnv(env, { waitUntil: () => undefined });
      return { ...real, expose: (key) => void exposed.push(key), ...patch };
    };
    const failing = { snapshot: () => Promise.reject(new Error("object overloaded")) };
    const request = () => parseRankParams("recommend", { placement: "home", userId: user }, DEFAULT_RANKING_CONFIG);
    // Outside any experiment, the same failure: the placement's normal list.
    const normal = await answer(deps(failing), request());
    await putOk(HOME_AB);
    resetCaches();
    const read = await settled(() => answer(deps(), request()));
    expect(read.experiment?.arm, "with the session read: the merged anonymous id's arm").toBe("control");
    exposed.length = 0;
    const failed = await answer(deps(failing), request());
    expect(failed.degraded).toEqual(expect.arrayContaining(["session_error", UNIT_UNKNOWN]));
    expect(failed.experiment).toBeNull();
    expect(ids(failed)).toEqual(ids(normal));
    expect(exposed).toEqual([]);
    // With the request's anonymous id the unit is known: the arm stands.
    const named = parseRankParams(
      "recommend",
      { placement: "home", userId: user, anonymousId: anon },
      DEFAULT_RANKING_CONFIG,
    );
    const guessed = await answer(deps(failing), named);
    expect(guessed.experiment?.arm).toBe("control");
    expect(guessed.degraded).not.toContain(UNIT_UNKNOWN);
  });

  it("an experiment outside its window does not run", async () => {
    await putOk({ experiments: [{ ...HOME_AB.experiments[0], end: "2020-01-01T00:00:00Z" }] });
    const a = await ok(get(`/v1/recommendations?placement=home&anonymousId=v-late`));
    expect(a.experiment).toBeNull();
  });

  it("interleave: one list drafted from both variants, each position labelled with its team", async () => {
    const doc = {
      experiments: [
        {
          id: "pdp-il",
          placement: "pdp",
          mode: "interleave",
          variants: [
            { id: "a", ranker: { kind: "ranker", weights: { popularity: 40 } } },
            { id: "b", ranker: { kind: "popular" } },
          ],
        },
      ],
    };
    await putOk(doc);
    const url = (anon: string, extra = "") =>
      `/v1/recommendations?placement=pdp&productId=${id("p1")}&anonymousId=${anon}&limit=6${extra}`;
    const a = await ok(get(url("v-il-1")));
    expect(a.experiment).toMatchObject({ id: "pdp-il", arm: "interleaved", mode: "interleave" });
    const teams = a.experiment?.teams ?? [];
    expect(teams).toHaveLength(a.items.length);
    expect(a.items.length).toBe(6);
    // Both rankers contribute, and each team's items appear in that ranker's own order: the same two variants as a
    // split experiment give each ranker's list (team a's: popularity 40, the popular products lead; team b's: the
    // non-personal list, p1's neighbours lead).
    const split = { experiments: [{ ...doc.experiments[0], id: "pdp-split", mode: "split" }] };
    await putOk(split);
    const listOf = async (arm: string) => ids(await ok(get(url(visitorIn(parsed(split), arm, `split-${arm}`)))));
    const own = await listOf("a");
    const popular = await listOf("b");
    expect(own).not.toEqual(popular);
    const teamA = ids(a).filter((_, i) => teams[i] === "a");
    const teamB = ids(a).filter((_, i) => teams[i] === "b");
    expect(teamA.length).toBeGreaterThan(0);
    expect(teamB.length).toBeGreaterThan(0);
    const inOrder = (picked: string[], list: string[]) => picked.map((x) => list.indexOf(x));
    for (const [picked, list] of [
      [teamA, own],
      [teamB, popular],
    ] as const) {
      const positions = inOrder(picked, list);
      expect(positions.every((p) => p >= 0)).toBe(true);
      expect([...positions].sort((x, y) => x - y)).toEqual(positions);
    }
    expect(new Set(ids(a)).size).toBe(ids(a).length);
  });

  it("interleave: a pin of either variant's list holds its slot, team pinned; the first variant's wins the slot", async () => {
    // One rule pins pop01 or pop02 at slot 1. The popular variant (a) pins pop01; the ranker variant (b) leaves out
    // what the visitor viewed (pop01) and pins pop02.
    const rules = await putRankingConfig({
      rules: [{ id: "promo", action: "pin", productIds: [id("pop01"), id("pop02")], slot: 1, placements: ["home"] }],
    });
    expect(rules.status, await rules.text()).toBe(200);
    const variants = [
      { id: "pop", ranker: { kind: "popular" } },
      { id: "merged", ranker: { kind: "ranker" } },
    ];
    await putOk({ experiments: [{ id: "home-il", placement: "home", mode: "interleave", variants }] });
    const anon = `pinned-${crypto.randomUUID().slice(0, 8)}`;
    await track({ anonymousId: anon }, [{ event: "Product Viewed", properties: { product_id: id("pop01") } }]);
    // The ranker variant's own list, as a split shows it: pop02 pinned at slot 1.
    const split = { experiments: [{ id: "home-split", placement: "home", variants }] };
    await putOk(split);
    const own = await settled(() =>
      ok(get(`/v1/recommendations?placement=home&anonymousId=${visitorIn(parsed(split), "merged", anon)}&limit=6`)),
    );
    await track({ anonymousId: visitorIn(parsed(split), "merged", anon) }, [
      { event: "Product Viewed", properties: { product_id: id("pop01") } },
    ]);
    const ownAfter = await settled(() =>
      ok(get(`/v1/recommendations?placement=home&anonymousId=${visitorIn(parsed(split), "merged", anon)}&limit=6`)),
    );
    expect(ids(own)[0]).toBe(id("pop01"));
    expect(ids(ownAfter)[0]).toBe(id("pop02"));
    expect(ownAfter.items[0]?.reasons[0]).toBe("pinned:promo");
    await putOk({ experiments: [{ id: "home-il", placement: "home", mode: "interleave", variants }] });
    resetCaches();
    for (let i = 0; i < 6; i++) {
      const a = await settled(() => ok(get(`/v1/recommendations?placement=home&anonymousId=${anon}&limit=6`)));
      const teams = a.experiment?.teams ?? [];
      const list = ids(a);
      expect(a.experiment?.arm).toBe("interleaved");
      expect(list[0], JSON.stringify({ list, teams })).toBe(id("pop01"));
      expect(teams[0]).toBe("pinned");
      // pop02, pinned by b at the slot a's pin holds, is in neither team's draft.
      expect(list).not.toContain(id("pop02"));
      a.items.forEach((item, k) => {
        if (item.reasons[0]?.startsWith("pinned:")) expect(teams[k], `${list[k]} at ${k + 1}`).toBe("pinned");
      });
      expect(teams.filter((t) => t === "pinned")).toHaveLength(1);
    }
  });
});

describe("exposures", () => {
  it("every answer to a named visitor reaches the warehouse stream as one exposure event, without touching the session", async () => {
    await putOk(HOME_AB);
    const anon = visitorIn(parsed(HOME_AB), "control", "exposed");
    const a = await ok(get(`/v1/recommendations?placement=home&anonymousId=${anon}&limit=3`));
    const event = await streamedEvent(`exposure-${a.recId}`, `a:${anon}`);
    expect(event).toMatchObject({
      type: "track",
      event: EXPOSURE_EVENT,
      anonymousId: anon,
      userId: null,
      sourceId: EXPOSURE_SOURCE,
      properties: {
        rec_id: a.recId,
        placement: "home",
        mode: "recommend",
        experiment_id: "home-ab",
        arm: "control",
        experiments_version: "v1",
        config_version: "default",
        snapshot_version: shop.version,
      },
    });
    expect((event.properties as { items: unknown }).items).toEqual(
      ids(a).map((productId, i) => ({ product_id: productId, position: i + 1 })),
    );
    // The session model ignores it: showing a list says nothing about the visitor.
    const snapshot = await env.SESSION_STATE.getByName(`a:${anon}`).snapshot(`a:${anon}`);
    expect(snapshot.viewed).toEqual([]);
    expect(snapshot.interactions).toEqual([]);
    // A visitor with a session: the exposure goes to the stream only — the session's counters do not move.
    const known = `known-${crypto.randomUUID().slice(0, 8)}`;
    await track({ anonymousId: known }, [{ event: "Product Viewed", properties: { product_id: id("p1") } }]);
    const stub = env.SESSION_STATE.getByName(`a:${known}`);
    const before = await stub.snapshot(`a:${known}`);
    const b = await ok(get(`/v1/recommendations?placement=home&anonymousId=${known}&limit=3`));
    expect((await streamedEvent(`exposure-${b.recId}`, `a:${known}`)).properties).toMatchObject({ rec_id: b.recId });
    const after = await stub.snapshot(`a:${known}`);
    expect(after.counters).toEqual(before.counters);
    expect(after.viewed).toEqual([id("p1")]);
    // No visitor, no exposure: nothing to attribute it to.
    const anonymous = await ok(get("/v1/recommendations?placement=home&limit=3"));
    expect(anonymous.experiment).toBeNull();
  });

  it("concurrent answers share batches, and every one of their exposures reaches the stream", async () => {
    // Separate requests in one isolate, more than a batch holds (EXPOSURE_BATCH_MAX): each batch is opened, waited
    // for and sent by one request while the others only join it. A request that sent or waited on another's batch
    // would fail the run ("Cannot perform I/O on behalf of a different request").
    const visitors = Array.from({ length: EXPOSURE_BATCH_MAX + 20 }, (_, i) => `together-${i}-${crypto.randomUUID()}`);
    const answers = await Promise.all(
      visitors.map((v) => ok(get(`/v1/recommendations?placement=home&anonymousId=${v}&limit=1`))),
    );
    const wanted = new Set(answers.map((a) => `exposure-${a.recId}`));
    const deadline = Date.now() + 10_000;
    while (wanted.size > 0 && Date.now() < deadline) {
      const entries = await redis().xrevrange(EVENT_STREAM, "+", "-", 2000);
      for (const f of Object.values(entries))
        wanted.delete(String((f as Record<string, unknown>)[STREAM_FIELDS.messageId]));
      if (wanted.size > 0) await new Promise((r) => setTimeout(r, 100));
    }
    expect([...wanted]).toEqual([]);
  });

  it("a merged visitor's exposure goes under the visitor key asked for: ranking follows no merge", async () => {
    const anon = `merged-${crypto.randomUUID().slice(0, 8)}`;
    const userId = `buyer-${crypto.randomUUID().slice(0, 8)}`;
    await track({ anonymousId: anon }, [{ event: "Product Viewed", properties: { product_id: id("p1") } }]);
    const identify = await collect(
      "/v1/identify",
      { userId, anonymousId: anon, messageId: crypto.randomUUID() },
      { headers: { authorization: basic(WRITE_KEY) } },
    );
    expect(identify).toMatchObject({ accepted: 1 });
    const a = await ok(get(`/v1/recommendations?placement=home&anonymousId=${anon}&limit=3`));
    expect(a.userKey).toBe(`a:${anon}`);
    // The exposure names the visitor; the warehouse links visitor and user through `identities`.
    const event = await streamedEvent(`exposure-${a.recId}`, `u:${userId}`);
    expect(event).toMatchObject({ userId: null, anonymousId: anon, properties: { rec_id: a.recId } });
  });

  it("a suppressed visitor's answers record no exposure, whether their data was erased or kept", async () => {
    const quiet = `quiet-${crypto.randomUUID().slice(0, 8)}`;
    const kept = `kept-${crypto.randomUUID().slice(0, 8)}`;
    const loud = `loud-${crypto.randomUUID().slice(0, 8)}`;
    // `kept` has a session: suppression without erasure keeps it, and its snapshot exists.
    await track({ anonymousId: kept }, [{ event: "Product Viewed", properties: { product_id: id("p1") } }]);
    for (const visitor of [quiet, kept]) {
      const suppress = await exports.default.fetch(
        new Request(`${BASE}/v1/admin/users/${visitor}/suppression?kind=anonymous`, {
          method: "PUT",
          headers: { authorization: `Bearer ${ADMIN_KEY}` },
        }),
      );
      expect(suppress.status).toBe(200);
    }
    const hidden = await ok(get(`/v1/recommendations?placement=home&anonymousId=${quiet}&limit=3`));
    const hiddenKept = await ok(get(`/v1/recommendations?placement=home&anonymousId=${kept}&limit=3`));
    expect(hidden.items.length).toBeGreaterThan(0);
    expect(hiddenKept.items.length).toBeGreaterThan(0);
    // An answer after them, to someone else: once its exposure is in the stream, theirs would be too.
    const shown = await ok(get(`/v1/recommendations?placement=home&anonymousId=${loud}&limit=3`));
    await streamedEvent(`exposure-${shown.recId}`, `a:${loud}`);
    const entries = await redis().xrevrange(EVENT_STREAM, "+", "-", 2000);
    const messageIds = Object.values(entries).map((f) => (f as Record<string, unknown>)[STREAM_FIELDS.messageId]);
    expect(messageIds).toContain(`exposure-${shown.recId}`);
    expect(messageIds).not.toContain(`exposure-${hidden.recId}`);
    expect(messageIds).not.toContain(`exposure-${hiddenKept.recId}`);
  });

  it("with Redis unreachable the answer is whole and the lost exposure is logged", async () => {
    const warnings: string[] = [];
    const spy = vi.spyOn(console, "warn").mockImplementation((...args: unknown[]) => {
      warnings.push(args.map(String).join(" "));
    });
    try {
      const deadRedis = { ...env, UPSTASH_REDIS_REST_URL: "http://127.0.0.1:9" } as Env;
      const res = await appFetch(
        deadRedis,
        `/v1/recommendations?placement=home&anonymousId=offline-${crypto.randomUUID()}&limit=3`,
        {
          headers: { authorization: `Bearer ${SERVER_KEY}` },
        },
      );
      expect(res.status).toBe(200);
      expect(((await res.json()) as Answer).items).toHaveLength(3);
    } finally {
      spy.mockRestore();
    }
    expect(warnings.some((w) => w.includes("exposures not recorded") && w.includes('"count":1'))).toBe(true);
  });
});
