using System.Diagnostics;
using System.Numerics.Tensors;
using OnnxAlign.Core;
using OnnxAlign.Estimation;
using OnnxAlign.Guidance;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>How the tilt q ∝ p·e^{⟨θ, x⟩} is sampled on a network that is only approximately a score (DESIGN §1d).</summary>
public enum TiltMethod
{
    /// <summary>
    /// The default: exact in the limit. A stochastic sampler runs twisted SMC with exact path weights
    /// (<see cref="TwistedSmc"/>, the projected tilt as proposal); a deterministic one runs tempered SMC on the initial
    /// noise (<see cref="NoiseSpaceSmc"/>). Costs more network evaluations than the plain tilt; reports its ESS.
    /// </summary>
    Exact,

    /// <summary>The plain shifted evaluation, projected onto the data range: one network evaluation per step, biased on
    /// trained networks for strong tilts (measured); the drift diagnostic reports how far it is from consistent.</summary>
    Fast,
}

/// <summary>What an exact tilted run does.</summary>
public sealed record ExactTiltSettings
{
    /// <summary>Samples to return (resampled from the weighted particles).</summary>
    public int Count { get; init; } = 64;

    /// <summary>Systems are added until the particles' effective sample size reaches this multiple of <see cref="Count"/> …</summary>
    public double TargetEssPerSample { get; init; } = 1.0;

    /// <summary>… or until this many particles per returned sample have been drawn (the run then says the target was missed).</summary>
    public double MaxParticlesPerSample { get; init; } = 16;

    /// <summary>At least this many systems, so that standard errors across systems exist.</summary>
    public int MinSystems { get; init; } = 4;

    /// <summary>The proposal tilt is s·θ (twisted SMC); any s gives exact weights, s only changes the ESS.</summary>
    public double ProposalScale { get; init; } = 1.0;

    /// <summary>Metropolis moves per stage of the noise-space SMC (deterministic samplers).</summary>
    public int MovesPerStage { get; init; } = 3;

    /// <summary>The SMC layout (particles per system, resampling threshold, seed, NaN policy).</summary>
    public SmcSettings Smc { get; init; } = new();

    /// <summary>
    /// The number of systems, fixed in advance (a plan's global set-up, DESIGN §10: <see cref="ExactTilt.PlanSystems"/>):
    /// exactly this many are run, whatever the ESS reaches; null (the default) adds systems until the ESS target or the
    /// particle budget. System b's noise depends only on (seed, b), so a fixed count makes the run a function of its
    /// systems' indices, which shards can split.
    /// </summary>
    public int? Systems { get; init; }

    /// <summary>
    /// Run only the systems of this block of <see cref="Systems"/> and return them, neither combined nor resampled
    /// (<see cref="ExactTilt.RunBlock"/>: a shard's part, DESIGN §10); null runs the whole SMC.
    /// </summary>
    public SystemBlock? Block { get; init; }

    /// <summary>The most systems the particle budget allows: ⌈<see cref="MaxParticlesPerSample"/>·<see cref="Count"/> / particles per system⌉, at least <see cref="MinSystems"/>.</summary>
    public int MaxSystems => Math.Max(MinSystems, (int)Math.Ceiling(MaxParticlesPerSample * Count / Smc.ParticlesPerSystem));

    /// <summary>Checks the settings.</summary>
    public ExactTiltSettings Validated()
    {
        if (Count < 1) throw new ArgumentOutOfRangeException(nameof(Count), Count, "expected ≥ 1");
        if (!(TargetEssPerSample > 0) || double.IsInfinity(TargetEssPerSample)) throw new ArgumentOutOfRangeException(nameof(TargetEssPerSample), TargetEssPerSample, "expected a finite value > 0");
        if (!(MaxParticlesPerSample >= 1) || double.IsInfinity(MaxParticlesPerSample)) throw new ArgumentOutOfRangeException(nameof(MaxParticlesPerSample), MaxParticlesPerSample, "expected a finite value ≥ 1");
        if (MinSystems < 1) throw new ArgumentOutOfRangeException(nameof(MinSystems), MinSystems, "expected ≥ 1");
        if (!(ProposalScale is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(ProposalScale), ProposalScale, "expected a value in [0, 1]");
        if (Systems is < 1) throw new ArgumentOutOfRangeException(nameof(Systems), Systems, "expected ≥ 1");
        if (Block is { } block && (Systems is not { } m || block.First < 0 || block.End <= block.First || block.End > m))
            throw new ArgumentOutOfRangeException(nameof(Block), block, $"expected a non-empty block of the {Systems?.ToString() ?? "(unset)"} systems");
        Smc.Validated();
        return this;
    }
}

/// <summary>The systems [<paramref name="First"/>, <paramref name="End"/>) of an SMC run with a fixed number of systems (a shard's part, DESIGN §10).</summary>
/// <param name="First">The first system's index.</param>
/// <param name="End">One past the last system's index.</param>
public readonly record struct SystemBlock(int First, int End)
{
    /// <summary>Systems in the block.</summary>
    public int Length => End - First;

    /// <summary>Shard i of n of <paramref name="systems"/> systems: the contiguous block <see cref="Shard.Range"/> gives, as for samples.</summary>
    public static SystemBlock Of(Shard shard, int systems)
    {
        var (start, length) = shard.Range(systems);
        return new SystemBlock(start, start + length);
    }

    /// <inheritdoc/>
    public override string ToString() => $"[{First}, {End})";
}

/// <summary>A block of finished systems (<see cref="ExactTilt.RunBlock"/>): what a shard of an SMC run returns.</summary>
/// <param name="Method"><c>twisted-smc</c> or <c>noise-space-smc</c>.</param>
/// <param name="Block">Which systems.</param>
/// <param name="Systems">The run's number of systems.</param>
/// <param name="Finished">The block's systems, in index order.</param>
/// <param name="Time">Wall time.</param>
public sealed record SmcBlock(string Method, SystemBlock Block, int Systems, IReadOnlyList<SmcSystem> Finished, TimeSpan Time)
{
    /// <summary>What the block cost.</summary>
    public long NetworkEvaluations => Finished.Sum(s => s.NetworkEvaluations);
}

/// <summary>
/// Finished systems held in memory by index (e.g. the systems of a run's shards, DESIGN §10): a run given this store
/// takes every system it holds instead of running it. With <c>complete: true</c>, asking for a system it does not hold
/// is an error rather than a reason to run it (a merge runs no network).
/// </summary>
public sealed class SmcSystemSet(IReadOnlyDictionary<int, SmcSystem> systems, bool complete = false) : ISmcSystemStore
{
    /// <summary>The systems by index.</summary>
    public IReadOnlyDictionary<int, SmcSystem> Systems { get; } = systems;

    /// <inheritdoc/>
    /// <exception cref="InvalidOperationException">A complete set without the system, or one of another size.</exception>
    public SmcSystem? TryLoad(int system, int particles, int sampleSize)
    {
        if (Systems.TryGetValue(system, out var found))
            return found.LogWeights.Length == particles && found.Samples.Length == (long)particles * sampleSize ? found
                : throw new InvalidOperationException($"system {system} holds {found.LogWeights.Length} particles of {found.Samples.Length / Math.Max(found.LogWeights.Length, 1)} values, the run has {particles} of {sampleSize}");
        return complete ? throw new InvalidOperationException($"system {system} is not among the {Systems.Count} given systems") : null;
    }

    /// <inheritdoc/>
    public void Save(int system, SmcSystem finished) { }
}

/// <summary>
/// Keeps finished SMC systems so that an interrupted run continues where it stopped (system b always uses the same
/// noise streams, so a resumed run equals an uninterrupted one).
/// </summary>
public interface ISmcSystemStore
{
    /// <summary>The saved system <paramref name="system"/>, or null.</summary>
    SmcSystem? TryLoad(int system, int particles, int sampleSize);

    /// <summary>Saves a finished system.</summary>
    void Save(int system, SmcSystem finished);
}

/// <summary>
/// Progress of an exact tilted run: systems done of the most it may run (its budget, or a block's or a plan's fixed count),
/// particles done, the ESS so far and its target. The run ends at the target or at the budget, whichever comes first
/// (<see cref="Fraction"/>).
/// </summary>
public readonly record struct ExactTiltProgress(int Systems, int MaxSystems, int Particles, double EffectiveSampleSize, double TargetEffectiveSampleSize,
                                               long NetworkEvaluations)
{
    /// <summary>
    /// How far the run is, in [0, 1]: the larger of the ESS's share of its target and the systems' share of the budget,
    /// since either ends it (a benchmark's unreachable target leaves only the budget).
    /// </summary>
    public double Fraction => Math.Clamp(Math.Max(TargetEffectiveSampleSize > 0 ? EffectiveSampleSize / TargetEffectiveSampleSize : 0,
                                                  MaxSystems > 0 ? Systems / (double)MaxSystems : 0), 0, 1);
}

/// <summary>An exact tilted run: the returned samples and what they stand on.</summary>
public sealed class ExactTiltResult
{
    internal ExactTiltResult(string method, WeightedParticles particles, float[] samples, int[] picks, double target, Estimate logZ, Estimate kl,
                             Estimate meanPotential, TimeSpan time, IReadOnlyList<SmcSystem> systems, double[] potentials)
    {
        Method = method; Particles = particles; Samples = samples; Picks = picks; TargetEffectiveSampleSize = target; Potentials = potentials;
        LogPartition = logZ; KlDivergence = kl; MeanPotential = meanPotential; Time = time; Systems = systems;
    }

    /// <summary><c>twisted-smc</c> (stochastic samplers) or <c>noise-space-smc</c> (deterministic ones).</summary>
    public string Method { get; }

    /// <summary>All weighted particles.</summary>
    public WeightedParticles Particles { get; }

    /// <summary>The returned samples, systematically resampled from <see cref="Particles"/>.</summary>
    public float[] Samples { get; }

    /// <summary>Which particle each returned sample is (repeats are copies).</summary>
    public int[] Picks { get; }

    /// <summary>Distinct particles among the returned samples.</summary>
    public int DistinctSamples => Picks.Distinct().Count();

    /// <summary>The ESS the run aimed at.</summary>
    public double TargetEffectiveSampleSize { get; }

    /// <summary>True when the particles' ESS reached the target before the particle budget ran out.</summary>
    public bool ReachedTarget => Particles.EffectiveSampleSize >= TargetEffectiveSampleSize;

    /// <summary>log Z(θ) = log E_p[e^{⟨θ, x⟩}] of the law returned, from the SMC's own Ẑ (no extra network evaluations).</summary>
    public Estimate LogPartition { get; }

    /// <summary>KL(π‖p) = E_π[⟨θ, x⟩] − log Z(θ), from the run's own weights.</summary>
    public Estimate KlDivergence { get; }

    /// <summary>G of each particle (⟨θ, x⟩, or r/λ for a reward's potential), as the estimates used them: a report needs no second evaluation of a network reward.</summary>
    public double[] Potentials { get; }

    /// <summary>E_π[⟨θ, x⟩].</summary>
    public Estimate MeanPotential { get; }

    /// <summary>Wall time.</summary>
    public TimeSpan Time { get; }

    /// <summary>The systems, in order.</summary>
    public IReadOnlyList<SmcSystem> Systems { get; }
}

/// <summary>
/// The exact tilt on any network (DESIGN §1d): q ∝ p·e^{⟨θ, x⟩} for the law p of a sampler on a trained network, exact
/// by construction — the plain shifted evaluation (§1) serves as the proposal and exact weights correct it, so no
/// property of the network is assumed. Picks the method from the sampler: twisted SMC with path weights when it is
/// stochastic, tempered SMC on the initial noise when it is deterministic. The base law p is the network with its x̂0
/// projected onto the data range when that is known (<see cref="DenoisedProjection"/>; θ = 0 of the same family).
/// </summary>
public static class ExactTilt
{
    /// <summary>The base law every tilted run of this network refers to: the network, projected when the range is known.</summary>
    public static IDenoiser BaseLaw(IDenoiser network, DataRange? range) => range is { } r ? new DenoisedProjection(network, r) : network;

    /// <summary>
    /// The plain (fast) tilt: the shifted evaluation, projected when the range is known. Tilting the projected base is
    /// the same as projecting the tilt: the tilted x̂0 is D(x + c_t θ) (DESIGN §1), so either way it is the projection of
    /// D at the shifted input, and ε^q follows from it.
    /// </summary>
    public static IDenoiser FastTilt(IDenoiser network, ReadOnlySpan<float> theta, DataRange? range) => new LinearTilt(BaseLaw(network, range), theta);

    /// <summary>
    /// Samples q ∝ p·e^{⟨θ, x⟩} exactly in the limit: SMC systems are added until the ESS target or the particle budget
    /// is reached, then <see cref="ExactTiltSettings.Count"/> samples are resampled.
    /// </summary>
    /// <param name="network">The network (not projected; the range is applied here).</param>
    /// <param name="range">The data range, or null when unknown.</param>
    /// <param name="sampler">The sampler whose law p is tilted.</param>
    /// <param name="theta">θ, one sample's worth of values.</param>
    /// <param name="settings">Count, budget, proposal scale, SMC layout.</param>
    /// <param name="progress">Reports after every system.</param>
    /// <param name="cancellation">Stops within one network call (<see cref="NetworkCancellation"/>).</param>
    /// <param name="store">Where finished systems are kept for a resumed run; null keeps them in memory only.</param>
    public static ExactTiltResult Sample(IDenoiser network, DataRange? range, Sampler sampler, ReadOnlySpan<float> theta, ExactTiltSettings? settings = null,
                                         IProgress<ExactTiltProgress>? progress = null, CancellationToken cancellation = default, ISmcSystemStore? store = null)
    {
        settings = (settings ?? new ExactTiltSettings()).Validated();
        if (theta.Length != network.SampleSize)
            throw new ArgumentException($"θ has {theta.Length} values, the model's samples have {network.SampleSize}", nameof(theta));
        var (potential, proposalTheta) = TiltTarget(theta, settings.ProposalScale);
        return SampleTarget(network, range, sampler, potential, proposalTheta, settings, progress, cancellation, store);
    }

    /// <summary>The target and proposal of <see cref="Sample"/>: G = ⟨θ, x⟩ and the proposal tilt s·θ (so a block of the same run is <see cref="RunBlock"/> of these).</summary>
    public static (BatchPotential Potential, float[] ProposalTheta) TiltTarget(ReadOnlySpan<float> theta, double proposalScale)
    {
        var thetaArray = theta.ToArray();
        return (Potentials.Batch(x => TensorPrimitives.Dot(thetaArray, x)), thetaArray.Select(v => (float)(v * proposalScale)).ToArray());
    }

    /// <summary>
    /// Samples π ∝ p·e^{G(x)} for any log-potential G (DESIGN §8: a reward over λ, e.g. g(Ax) of a convex low-rank
    /// reward), exactly in the limit, with the fast tilt by <paramref name="proposalTheta"/> as the proposal of the
    /// twisted SMC (any θ is exact; one near the target raises the ESS). Deterministic samplers use the noise-space SMC,
    /// which needs no proposal. The other parameters are <see cref="Sample"/>'s; the result's KL is E_π[G] − log Z.
    /// </summary>
    /// <param name="network">The network (not projected; the range is applied here).</param>
    /// <param name="range">The data range, or null when unknown.</param>
    /// <param name="sampler">The sampler whose law p is tilted.</param>
    /// <param name="potential">G: the log of the target's density against p, up to a constant.</param>
    /// <param name="proposalTheta">The proposal tilt θ_q (stochastic samplers).</param>
    /// <param name="settings">Count, budget and SMC layout (<see cref="ExactTiltSettings.ProposalScale"/> is not applied here).</param>
    /// <param name="progress">Reports after every system.</param>
    /// <param name="cancellation">Stops within one network call.</param>
    /// <param name="store">Where finished systems are kept for a resumed run.</param>
    public static ExactTiltResult SampleTarget(IDenoiser network, DataRange? range, Sampler sampler, LogPotential potential, ReadOnlySpan<float> proposalTheta,
                                               ExactTiltSettings? settings = null, IProgress<ExactTiltProgress>? progress = null,
                                               CancellationToken cancellation = default, ISmcSystemStore? store = null) =>
        SampleTarget(network, range, sampler, Potentials.Batch(potential), proposalTheta, settings, progress, cancellation, store);

    /// <summary>
    /// <see cref="SampleTarget(IDenoiser, DataRange?, Sampler, LogPotential, ReadOnlySpan{float}, ExactTiltSettings?, IProgress{ExactTiltProgress}?, CancellationToken, ISmcSystemStore?)"/>
    /// with G evaluated a batch at a time (a network reward r/λ, DESIGN §8). A zero <paramref name="proposalTheta"/> moves
    /// the particles under the base law itself (Feynman–Kac steering; with <see cref="SmcSettings.Resampling"/> off,
    /// importance resampling from p), at one network evaluation per particle and step.
    /// </summary>
    public static ExactTiltResult SampleTarget(IDenoiser network, DataRange? range, Sampler sampler, BatchPotential potential, ReadOnlySpan<float> proposalTheta,
                                               ExactTiltSettings? settings = null, IProgress<ExactTiltProgress>? progress = null,
                                               CancellationToken cancellation = default, ISmcSystemStore? store = null)
    {
        settings = (settings ?? new ExactTiltSettings()).Validated();
        if (settings.Block is not null) throw new ArgumentException("the settings ask for a block of systems: RunBlock runs one", nameof(settings));
        using var cancellationScope = NetworkCancellation.Enter(cancellation);
        var (method, runSystem) = Prepare(network, range, sampler, potential, proposalTheta, settings, store);
        return Run(method, runSystem, network.SampleSize, settings, progress, cancellation);
    }

    /// <summary>
    /// Runs the systems of <see cref="ExactTiltSettings.Block"/> (of a run with <see cref="ExactTiltSettings.Systems"/>
    /// systems) of the SMC <see cref="SampleTarget(IDenoiser, DataRange?, Sampler, BatchPotential, ReadOnlySpan{float}, ExactTiltSettings?, IProgress{ExactTiltProgress}?, CancellationToken, ISmcSystemStore?)"/>
    /// would run, and returns them: a shard's part (DESIGN §10). System b is the same whichever process runs it, so the
    /// blocks of all shards, given back as a store (<see cref="SmcSystemSet"/>), make exactly the single run.
    /// </summary>
    /// <param name="network">The network (not projected; the range is applied here).</param>
    /// <param name="range">The data range, or null when unknown.</param>
    /// <param name="sampler">The sampler whose law p is tilted.</param>
    /// <param name="potential">G, evaluated a batch at a time.</param>
    /// <param name="proposalTheta">The proposal tilt θ_q (stochastic samplers).</param>
    /// <param name="settings">With <see cref="ExactTiltSettings.Systems"/> and <see cref="ExactTiltSettings.Block"/> set.</param>
    /// <param name="progress">Reports after every system (its ESS is the block's so far).</param>
    /// <param name="cancellation">Stops within one network call.</param>
    /// <param name="store">Where finished systems are kept for a resumed shard.</param>
    public static SmcBlock RunBlock(IDenoiser network, DataRange? range, Sampler sampler, BatchPotential potential, ReadOnlySpan<float> proposalTheta,
                                    ExactTiltSettings settings, IProgress<ExactTiltProgress>? progress = null,
                                    CancellationToken cancellation = default, ISmcSystemStore? store = null)
    {
        settings = settings.Validated();
        if (settings.Block is not { } block) throw new ArgumentException("the settings name no block of systems (ExactTiltSettings.Block)", nameof(settings));
        using var cancellationScope = NetworkCancellation.Enter(cancellation);
        var clock = Stopwatch.StartNew();
        var (method, runSystem) = Prepare(network, range, sampler, potential, proposalTheta, settings, store);
        var finished = new List<SmcSystem>();
        for (int b = block.First; b < block.End; b++)
        {
            finished.Add(runSystem(b, cancellation));
            if (progress is null) continue;
            double ess = finished.Any(s => s.LogWeights.Any(double.IsFinite)) ? Combine(finished, network.SampleSize).EffectiveSampleSize : 0;
            progress.Report(new ExactTiltProgress(finished.Count, block.Length, finished.Count * settings.Smc.ParticlesPerSystem, ess,
                settings.TargetEssPerSample * settings.Count * block.Length / settings.Systems!.Value, finished.Sum(s => s.NetworkEvaluations)));
        }
        return new SmcBlock(method, block, settings.Systems!.Value, finished, clock.Elapsed);
    }

    /// <summary>
    /// The number of systems a plan fixes (DESIGN §10) from a pilot of the run's first systems: their ESS per system
    /// sets M = ⌈target ESS / ESS per system⌉, held between <see cref="ExactTiltSettings.MinSystems"/> and the budget's
    /// <see cref="ExactTiltSettings.MaxSystems"/> (the budget when the pilot has no weight at all). The adaptive run stops
    /// at the first M whose ESS reaches the target; this estimates that M from the pilot, before any shard starts (ESS is not exactly additive over systems: their normalisers weigh them).
    /// </summary>
    /// <param name="pilot">The pilot systems (the run's first ones, e.g. a <see cref="RunBlock"/> of [0, MinSystems)).</param>
    /// <param name="sampleSize">Values per sample.</param>
    /// <param name="settings">The run's settings, with the request's <see cref="ExactTiltSettings.Count"/>.</param>
    public static int PlanSystems(IReadOnlyList<SmcSystem> pilot, int sampleSize, ExactTiltSettings settings)
    {
        if (pilot.Count == 0) throw new ArgumentException("expected at least one pilot system", nameof(pilot));
        double perSystem = pilot.Any(s => s.LogWeights.Any(double.IsFinite)) ? Combine(pilot, sampleSize).EffectiveSampleSize / pilot.Count : 0;
        double target = settings.TargetEssPerSample * settings.Count;
        double wanted = perSystem > 0 ? Math.Ceiling(target / perSystem) : double.PositiveInfinity;
        return (int)Math.Clamp(wanted, settings.MinSystems, settings.MaxSystems);
    }

    /// <summary>The method's name and a function that runs (or loads from the store, and saves to it) system b.</summary>
    private static (string Method, Func<int, CancellationToken, SmcSystem> RunSystem) Prepare(IDenoiser network, DataRange? range, Sampler sampler, BatchPotential potential,
                                                                                             ReadOnlySpan<float> proposalTheta, ExactTiltSettings settings, ISmcSystemStore? store)
    {
        if (proposalTheta.Length != network.SampleSize)
            throw new ArgumentException($"θ has {proposalTheta.Length} values, the model's samples have {network.SampleSize}", nameof(proposalTheta));
        var baseLaw = BaseLaw(network, range);
        Func<int, CancellationToken, SmcSystem> runSystem;
        string method;
        if (sampler.IsStochastic)
        {
            bool untilted = !proposalTheta.ContainsAnyExcept(0f);
            var smc = new TwistedSmc(baseLaw, untilted ? baseLaw : FastTilt(network, proposalTheta, range), sampler, potential, settings.Smc);
            (runSystem, method) = (smc.RunSystem, "twisted-smc");
        }
        else
        {
            var smc = new NoiseSpaceSmc(baseLaw, sampler, potential, settings.Smc, settings.MovesPerStage);
            (runSystem, method) = (smc.RunSystem, "noise-space-smc");
        }
        if (store is not null)
        {
            var compute = runSystem;
            int particles = settings.Smc.ParticlesPerSystem, size = network.SampleSize;
            runSystem = (b, token) =>
            {
                if (store.TryLoad(b, particles, size) is { } saved) return saved;
                var finished = compute(b, token);
                store.Save(b, finished);
                return finished;
            };
        }
        return (method, runSystem);
    }

    private static ExactTiltResult Run(string method, Func<int, CancellationToken, SmcSystem> runSystem, int sampleSize,
                                       ExactTiltSettings settings, IProgress<ExactTiltProgress>? progress, CancellationToken cancellation)
    {
        var clock = Stopwatch.StartNew();
        int perSystem = settings.Smc.ParticlesPerSystem;
        double target = settings.TargetEssPerSample * settings.Count;
        // A fixed count (a plan's) runs exactly its systems; otherwise systems are added until the target or the budget.
        int maxSystems = settings.Systems ?? settings.MaxSystems;
        var systems = new List<SmcSystem>();
        WeightedParticles? particles = null;
        while (systems.Count < maxSystems)
        {
            systems.Add(runSystem(systems.Count, cancellation));
            if (settings.Systems is not null && systems.Count < maxSystems && progress is null) continue;
            particles = Combine(systems, sampleSize);
            progress?.Report(new ExactTiltProgress(systems.Count, maxSystems, systems.Count * perSystem, particles.EffectiveSampleSize, target, particles.NetworkEvaluations));
            if (settings.Systems is null && systems.Count >= settings.MinSystems && particles.EffectiveSampleSize >= target) break;
        }
        particles = Combine(systems, sampleSize);
        // G of every particle as its system evaluated it: no second evaluation of the potential (a network reward's).
        var values = systems.SelectMany(s => s.Potentials).ToArray();
        var mean = particles.Mean(values);
        var logZ = particles.LogNormalizer;
        var kl = new Estimate(mean.Value - logZ.Value, Math.Sqrt(mean.StandardError * mean.StandardError + logZ.StandardError * logZ.StandardError));
        var (samples, picks) = particles.Resample(settings.Count, settings.Smc.Seed);
        return new ExactTiltResult(method, particles, samples, picks, target, logZ, kl, mean, clock.Elapsed, systems, values);
    }

    /// <summary>The weighted particle set of finished systems.</summary>
    public static WeightedParticles Combine(IReadOnlyList<SmcSystem> systems, int sampleSize)
    {
        var samples = new float[systems.Sum(s => (long)s.Samples.Length)];
        long offset = 0;
        foreach (var s in systems) { s.Samples.CopyTo(samples.AsSpan((int)offset)); offset += s.Samples.Length; }
        return new WeightedParticles(samples, sampleSize, systems.Select(s => s.LogWeights.Length).ToArray(),
            systems.SelectMany(s => s.LogWeights).ToArray(), systems.Select(s => s.LogNormalizer).ToArray(),
            systems.Sum(s => s.NetworkEvaluations), systems.Sum(s => s.Resamplings));
    }
}
