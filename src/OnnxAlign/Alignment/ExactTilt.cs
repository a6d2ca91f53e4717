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

    /// <summary>Checks the settings.</summary>
    public ExactTiltSettings Validated()
    {
        if (Count < 1) throw new ArgumentOutOfRangeException(nameof(Count), Count, "expected ≥ 1");
        if (!(TargetEssPerSample > 0) || double.IsInfinity(TargetEssPerSample)) throw new ArgumentOutOfRangeException(nameof(TargetEssPerSample), TargetEssPerSample, "expected a finite value > 0");
        if (!(MaxParticlesPerSample >= 1) || double.IsInfinity(MaxParticlesPerSample)) throw new ArgumentOutOfRangeException(nameof(MaxParticlesPerSample), MaxParticlesPerSample, "expected a finite value ≥ 1");
        if (MinSystems < 1) throw new ArgumentOutOfRangeException(nameof(MinSystems), MinSystems, "expected ≥ 1");
        if (!(ProposalScale is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(ProposalScale), ProposalScale, "expected a value in [0, 1]");
        Smc.Validated();
        return this;
    }
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

/// <summary>Progress of an exact tilted run: systems and particles done, the ESS so far.</summary>
public readonly record struct ExactTiltProgress(int Systems, int Particles, double EffectiveSampleSize, double TargetEffectiveSampleSize, long NetworkEvaluations);

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
        var thetaArray = theta.ToArray();
        var proposalTheta = thetaArray.Select(v => (float)(v * settings.ProposalScale)).ToArray();
        return SampleTarget(network, range, sampler, x => TensorPrimitives.Dot(thetaArray, x), proposalTheta, settings, progress, cancellation, store);
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
        using var cancellationScope = NetworkCancellation.Enter(cancellation);
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
        return Run(method, runSystem, network.SampleSize, potential, settings, progress, cancellation);
    }

    private static ExactTiltResult Run(string method, Func<int, CancellationToken, SmcSystem> runSystem, int sampleSize, BatchPotential potential,
                                       ExactTiltSettings settings, IProgress<ExactTiltProgress>? progress, CancellationToken cancellation)
    {
        var clock = Stopwatch.StartNew();
        int perSystem = settings.Smc.ParticlesPerSystem;
        double target = settings.TargetEssPerSample * settings.Count;
        int maxSystems = Math.Max(settings.MinSystems, (int)Math.Ceiling(settings.MaxParticlesPerSample * settings.Count / perSystem));
        var systems = new List<SmcSystem>();
        WeightedParticles? particles = null;
        while (systems.Count < maxSystems)
        {
            systems.Add(runSystem(systems.Count, cancellation));
            particles = Combine(systems, sampleSize);
            progress?.Report(new ExactTiltProgress(systems.Count, systems.Count * perSystem, particles.EffectiveSampleSize, target, particles.NetworkEvaluations));
            if (systems.Count >= settings.MinSystems && particles.EffectiveSampleSize >= target) break;
        }
        var values = potential.Evaluate(particles!.Samples, particles.Count);
        var mean = particles!.Mean(values);
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
