using System.Numerics.Tensors;
using System.Text.Json.Nodes;
using OnnxAlign.Core;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>How a sequential Monte Carlo run is laid out.</summary>
public sealed record SmcSettings
{
    /// <summary>Particles per system: resampling acts within a system; one network call evaluates a system.</summary>
    public int ParticlesPerSystem { get; init; } = 64;

    /// <summary>Resample a system when its effective sample size drops below this fraction of its particles (DESIGN §8: ½).</summary>
    public double ResampleThreshold { get; init; } = 0.5;

    /// <summary>Particle i of system b starts from noise stream (Seed, b·N + i).</summary>
    public long Seed { get; init; }

    /// <summary>Stop at a particle that turns NaN/±∞, or give it weight 0 and go on.</summary>
    public NonFinitePolicy OnNonFinite { get; init; } = NonFinitePolicy.Stop;

    /// <summary>
    /// True (default): twisted SMC, potentials at every step and resampling below the threshold. False: sequential
    /// importance sampling — no intermediate potentials, no resampling, each particle weighted once at the end by its
    /// path ratio and G(x0) (DESIGN §8's tilt-IS; with the base law as proposal, importance resampling from p).
    /// Twisted SMC only; the noise-space SMC always tempers.
    /// </summary>
    public bool Resampling { get; init; } = true;

    /// <summary>Checks the settings.</summary>
    public SmcSettings Validated() =>
        ParticlesPerSystem < 2 ? throw new ArgumentOutOfRangeException(nameof(ParticlesPerSystem), ParticlesPerSystem, "a system needs ≥ 2 particles")
        : !(ResampleThreshold is > 0 and <= 1) ? throw new ArgumentOutOfRangeException(nameof(ResampleThreshold), ResampleThreshold, "expected a value in (0, 1]")
        : this;
}

/// <summary>One finished SMC system: its particles, their log weights within it, their final potentials and its log Ẑ.</summary>
/// <param name="Samples">The particles, sample after sample.</param>
/// <param name="LogWeights">Log weights within the system.</param>
/// <param name="LogNormalizer">log Ẑ, an unbiased estimate of Z = E_p[e^G] (in log).</param>
/// <param name="Resamplings">Resampling events.</param>
/// <param name="NetworkEvaluations">What the system cost.</param>
/// <param name="NonFinite">Particles dropped (weight 0) because they turned NaN/±∞.</param>
/// <param name="Potentials">
/// G(x0) of each particle as the system evaluated it for its last weight (0 for a dropped particle, whose weight is 0):
/// the estimates E_π[G], KL and a reward's mean need no second evaluation of G, so combining systems (a merge of shards,
/// DESIGN §10) needs no reward network.
/// </param>
public sealed record SmcSystem(float[] Samples, double[] LogWeights, double LogNormalizer, int Resamplings, long NetworkEvaluations, int NonFinite, double[] Potentials)
{
    /// <summary>The system as JSON, without its particles (a checkpoint's note, a shard's <c>systems.json</c>); a weight-0 particle's log weight is null.</summary>
    public JsonObject ToJson() => new()
    {
        ["log_weights"] = new JsonArray(LogWeights.Select(w => double.IsFinite(w) ? JsonValue.Create(w) : null).ToArray<JsonNode?>()),
        ["potentials"] = new JsonArray(Potentials.Select(g => (JsonNode)g).ToArray()),
        ["log_normalizer"] = LogNormalizer,
        ["resamplings"] = Resamplings,
        ["network_evaluations"] = NetworkEvaluations,
        ["non_finite"] = NonFinite,
    };

    /// <summary>Reads <see cref="ToJson"/>'s output with the system's particles; null when it holds another number of particles or no potentials (written by an older version).</summary>
    /// <exception cref="FormatException">A damaged description.</exception>
    public static SmcSystem? FromJson(JsonObject json, float[] samples)
    {
        try
        {
            var weights = json["log_weights"]!.AsArray().Select(v => v is null ? double.NegativeInfinity : v.GetValue<double>()).ToArray();
            if (json["potentials"] is not JsonArray potentials) return null;
            var g = potentials.Select(v => v!.GetValue<double>()).ToArray();
            if (g.Length != weights.Length || weights.Length == 0 || samples.Length % weights.Length != 0) return null;
            return new SmcSystem(samples, weights, json["log_normalizer"]!.GetValue<double>(), json["resamplings"]!.GetValue<int>(),
                                 json["network_evaluations"]!.GetValue<long>(), json["non_finite"]!.GetValue<int>(), g);
        }
        catch (Exception e) when (e is InvalidOperationException or NullReferenceException or FormatException)
        {
            throw new FormatException($"not an SMC system ({e.Message})", e);
        }
    }
}

/// <summary>
/// Twisted SMC with exact path weights for stochastic samplers (DESIGN §1d, §8). Particles move under a proposal
/// denoiser (a projected tilt q_s); the target is the base sampler's own path law p tilted by e^{G(x0)}. Every step of a
/// stochastic sampler is Gaussian, x_{i+1} = m_i(x_i, ε̂) + s_i·z, under p and q alike, so the transition-density ratio
///     p(x_{i+1} | x_i) / q(x_{i+1} | x_i) = exp(−|Δ_i|²/(2s_i²) − ⟨Δ_i, z_i⟩/s_i),   Δ_i = m_i^q − m_i^p
/// is known exactly (both networks are evaluated at x_i). With twists h_i = e^{G(x̂0^q_i)} (the proposal's x̂0), the
/// potentials G_i = (p/q)·h_{i+1}/h_i telescope to (p/q along the path)·e^{G(x0)}, so the weighted particles target
/// π ∝ p·e^{G} exactly as the number of systems grows — whatever error the trained network makes at the shifted
/// inputs (which DESIGN §8's potentials alone, without the ratio, would leave as a bias: measured, see README).
/// Steps without noise (the last step of DDPM and Euler–Maruyama), and steps whose noise is below
/// <see cref="MinimumGuidedNoiseScale"/> (DDPM's last step with trailing spacing adds 10⁻¹⁰·z, as diffusers does),
/// take the base step: choosing the base kernel at a step is as exact as any other proposal (its ratio is 1), and
/// there the proposal's ratio would be e^{−|Δ|²/2s²} ≈ 0.
/// A system resamples (systematically) when its ESS drops below the threshold; copies separate through the noise.
/// Cost: two network evaluations per particle and step.
/// </summary>
public sealed class TwistedSmc
{
    private readonly IDenoiser _base;
    private readonly IDenoiser _proposal;
    private readonly Sampler _sampler;
    private readonly BatchPotential _target;
    private readonly bool _proposalIsBase;

    /// <summary>Targets p·e^{G} with <paramref name="baseLaw"/> as p, moving particles under <paramref name="proposal"/>.</summary>
    public TwistedSmc(IDenoiser baseLaw, IDenoiser proposal, Sampler sampler, LogPotential target, SmcSettings? settings = null)
        : this(baseLaw, proposal, sampler, Potentials.Batch(target), settings) { }

    /// <summary>Targets p·e^{G} with <paramref name="baseLaw"/> as p, moving particles under <paramref name="proposal"/>;
    /// G is evaluated a batch at a time (a network reward). When <paramref name="proposal"/> is <paramref name="baseLaw"/>
    /// itself (Feynman–Kac steering with the base proposal) every step costs one network evaluation, not two.</summary>
    /// <param name="baseLaw">The base law (the network, projected onto the data range when known).</param>
    /// <param name="proposal">The proposal denoiser (a projected tilt of the same network).</param>
    /// <param name="sampler">A stochastic sampler.</param>
    /// <param name="target">G, the log density ratio dπ/dp up to a constant.</param>
    /// <param name="settings">Layout of the run.</param>
    public TwistedSmc(IDenoiser baseLaw, IDenoiser proposal, Sampler sampler, BatchPotential target, SmcSettings? settings = null)
    {
        if (baseLaw.SampleSize != proposal.SampleSize) throw new ArgumentException("the base law and the proposal have different sample sizes", nameof(proposal));
        if (!sampler.IsStochastic)
            throw new ArgumentException($"{sampler.Name} is deterministic: twisted SMC needs a stochastic sampler (ddpm, euler-maruyama, ddim with η > 0); use NoiseSpaceSmc", nameof(sampler));
        (_base, _proposal, _sampler, _target) = (baseLaw, proposal, sampler, target);
        _proposalIsBase = ReferenceEquals(baseLaw, proposal);
        Settings = (settings ?? new SmcSettings()).Validated();
    }

    /// <summary>The run's layout.</summary>
    public SmcSettings Settings { get; }

    /// <summary>Steps whose noise scale s_i is below this move particles by the base kernel (see the class remarks).</summary>
    public const double MinimumGuidedNoiseScale = 1e-4;

    /// <summary>Runs system <paramref name="system"/> (its particles use the noise streams of indices system·N …):
    /// <see cref="TwistedSmcParticles"/> stepped with the two denoisers.</summary>
    public SmcSystem RunSystem(int system, CancellationToken cancellation = default)
    {
        var particles = new TwistedSmcParticles(_sampler, _target, _base.SampleSize, Settings, system, _proposalIsBase);
        int n = particles.Count;
        for (int i = 0; i < _sampler.Steps; i++)
        {
            cancellation.ThrowIfCancellationRequested();
            int t = _sampler.Timesteps[i];
            _proposal.PredictNoise(particles.Particles, n, t, particles.ProposalNoise);
            if (!_proposalIsBase) _base.PredictNoise(particles.Particles, n, t, particles.BaseNoise);
            particles.Step(i);
        }
        return particles.Finish();
    }
}
