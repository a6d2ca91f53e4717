using System.Numerics.Tensors;
using OnnxAlign.Core;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>
/// One system of <see cref="TwistedSmc"/> moved a step at a time by the caller's loop (loop-free, diffusers' shape):
/// the exact tilt (DESIGN §1d) or any p·e^{G} (§8) in a pipeline that owns its loop and its network calls. Before
/// step i the caller evaluates the proposal's ε̂ at <see cref="Particles"/> into <see cref="ProposalNoise"/> and the
/// base law's into <see cref="BaseNoise"/> (both at <see cref="Sampler.Timesteps"/>[i]); <see cref="Step"/> then weighs
/// the particles (twist increments and the exact transition-density ratio p/q), resamples the system when its ESS
/// drops below the threshold, and moves every particle by the proposal's kernel. <see cref="Finish"/> adds the final
/// potential and returns the weighted system. <see cref="TwistedSmc.RunSystem"/> is exactly this loop with the
/// library's denoisers, so a caller's loop with the same networks, settings and system index gives the same system,
/// bit for bit, and several systems combine with <see cref="ExactTilt.Combine"/>.
/// Not thread-safe: one instance is one system's state.
/// </summary>
public sealed class TwistedSmcParticles
{
    private readonly Sampler _sampler;
    private readonly BatchPotential _target;
    private readonly SmcSettings _settings;
    private readonly bool _proposalIsBase;
    private readonly int _system;
    private readonly NoiseStream[] _streams;
    private readonly NoiseStream _resampler;
    private readonly float[] _baseMean;
    private readonly float[] _denoised;
    private readonly float[] _z;
    private readonly SamplerState _proposalState;
    private readonly SamplerState _baseState;
    private readonly double[] _logWeights;
    private double[] _twist;
    private readonly bool[] _dead;
    private double _logNormalizer;
    private int _resamplings;
    private long _evaluations;
    private bool _finished;

    /// <summary>
    /// Starts system <paramref name="system"/>: its N = <see cref="SmcSettings.ParticlesPerSystem"/> particles draw x_T
    /// (and later their noise) from the streams (seed, system·N + b), as <see cref="TwistedSmc"/>'s do.
    /// </summary>
    /// <param name="sampler">A stochastic sampler: the base law p is its path law on the base network.</param>
    /// <param name="target">G, the log density ratio dπ/dp up to a constant (⟨θ, x⟩ for the exact tilt: <see cref="ExactTilt.TiltTarget"/>).</param>
    /// <param name="sampleSize">Values per sample.</param>
    /// <param name="settings">Particles per system, threshold, seed and NaN policy.</param>
    /// <param name="system">The system's index (its noise streams).</param>
    /// <param name="proposalIsBase">True when the particles move under the base law itself (Feynman–Kac steering): the
    /// caller fills <see cref="ProposalNoise"/> only, one network evaluation per particle and step.</param>
    public TwistedSmcParticles(Sampler sampler, BatchPotential target, int sampleSize, SmcSettings? settings = null, int system = 0, bool proposalIsBase = false)
    {
        ArgumentNullException.ThrowIfNull(sampler);
        ArgumentNullException.ThrowIfNull(target);
        if (!sampler.IsStochastic)
            throw new ArgumentException($"{sampler.Name} is deterministic: twisted SMC needs a stochastic sampler (ddpm, euler-maruyama, ddim with η > 0); use NoiseSpaceSmc", nameof(sampler));
        ArgumentOutOfRangeException.ThrowIfLessThan(sampleSize, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(system);
        _settings = (settings ?? new SmcSettings()).Validated();
        (_sampler, _target, _proposalIsBase, _system) = (sampler, target, proposalIsBase, system);
        int n = _settings.ParticlesPerSystem, d = sampleSize;
        (Particles, _streams, _resampler) = SmcParticles.Start(_settings.Seed, system, n, d);
        ProposalNoise = new float[n * d];
        BaseNoise = new float[n * d];
        _baseMean = new float[n * d];
        _denoised = new float[n * d];
        _z = new float[d];
        _proposalState = sampler.CreateState(n, d);
        _baseState = sampler.CreateState(n, d);
        _logWeights = new double[n];
        _twist = new double[n];
        _dead = new bool[n];
        SampleSize = d;
    }

    /// <summary>Particles in the system (N).</summary>
    public int Count => _logWeights.Length;

    /// <summary>Values per sample.</summary>
    public int SampleSize { get; }

    /// <summary>The particles x_i, sample after sample: evaluate the networks here before each <see cref="Step"/>; the final samples after the last.</summary>
    public float[] Particles { get; }

    /// <summary>Fill with the proposal denoiser's ε̂ at <see cref="Particles"/> (e.g. the projected tilt, <see cref="Guidance.LinearTilt.GuideNoise"/>).</summary>
    public float[] ProposalNoise { get; }

    /// <summary>Fill with the base law's ε̂ at <see cref="Particles"/> (the network, projected onto the data range when known); ignored when the proposal is the base.</summary>
    public float[] BaseNoise { get; }

    /// <summary>Steps taken so far: the index the next <see cref="Step"/> must be given.</summary>
    public int StepsTaken { get; private set; }

    /// <summary>Network evaluations (per particle) the steps so far stand for.</summary>
    public long NetworkEvaluations => _evaluations;

    /// <summary>The particles' current log weights within the system (−∞ for a dropped one).</summary>
    public IReadOnlyList<double> LogWeights => _logWeights;

    /// <summary>Moves the system by step <paramref name="index"/> of the sampler (see the class remarks).</summary>
    /// <exception cref="InvalidOperationException">Steps out of order, or after <see cref="Finish"/>.</exception>
    /// <exception cref="NonFiniteException">A particle turned NaN/±∞ under <see cref="NonFinitePolicy.Stop"/>, or every particle did.</exception>
    public void Step(int index)
    {
        if (_finished) throw new InvalidOperationException("the system is finished");
        if (index != StepsTaken) throw new InvalidOperationException($"expected step {StepsTaken}, got {index}");
        if (index >= _sampler.Steps) throw new InvalidOperationException($"the sampler has {_sampler.Steps} steps");
        int n = Count, d = SampleSize, i = index;
        var x = Particles;
        if (_proposalIsBase) ProposalNoise.CopyTo(BaseNoise, 0);
        _evaluations += (_proposalIsBase ? 1L : 2L) * n;
        var (alpha, sigma) = _sampler.Schedule.AlphaSigma(_sampler.Timesteps[i]);
        Prediction.DenoisedFromNoise(x, ProposalNoise, alpha, sigma, _denoised);
        // Twists h_i = G(x̂0 of the proposal); plain importance sampling has none (it weighs x0 once at the end).
        var h = _settings.Resampling ? _target.Evaluate(_denoised, n) : null;
        for (int b = 0; b < n; b++)
        {
            if (_dead[b]) continue;
            if ((h is not null && !double.IsFinite(h[b])) || !Numerics.AllFinite(ProposalNoise.AsSpan(b * d, d)) || !Numerics.AllFinite(BaseNoise.AsSpan(b * d, d)))
            {
                Drop(b, i + 1);
                continue;
            }
            if (h is null) continue;
            _logWeights[b] += h[b] - _twist[b];
            _twist[b] = h[b];
        }
        if (_dead.All(v => v)) throw AllDropped(i + 1);
        if (_settings.Resampling && Ess(_logWeights) < _settings.ResampleThreshold * n)
        {
            var (logMean, ancestors) = SmcParticles.Resample(_logWeights, _resampler, _streams, i, d, x, ProposalNoise, BaseNoise);
            _logNormalizer += logMean;
            _proposalState.Permute(ancestors);
            _baseState.Permute(ancestors);
            _twist = ancestors.Select(a => _twist[a]).ToArray();
            Array.Clear(_dead);
            _resamplings++;
        }
        double scale = _sampler.NoiseScale(i);
        if (scale >= TwistedSmc.MinimumGuidedNoiseScale)
        {
            // Both kernels' means from the same x_i; the particle moves by the proposal's.
            x.CopyTo(_baseMean, 0);
            _sampler.Advance(i, BaseNoise, _baseMean, _denoised, _baseState);
            _sampler.Advance(i, ProposalNoise, x, _denoised, _proposalState);
            for (int b = 0; b < n; b++)
            {
                var row = x.AsSpan(b * d, d);
                var mean = _baseMean.AsSpan(b * d, d);
                _streams[b].NextGaussian(_z);
                if (_dead[b]) continue;
                double deltaSq = 0, deltaZ = 0;
                for (int k = 0; k < d; k++)
                {
                    double delta = row[k] - mean[k];
                    deltaSq += delta * delta;
                    deltaZ += delta * _z[k];
                }
                // log p(x'|x) − log q(x'|x) at x' = m^q + s z
                _logWeights[b] += -deltaSq / (2 * scale * scale) - deltaZ / scale;
                TensorPrimitives.MultiplyAdd(_z, (float)scale, row, row);
            }
        }
        else
        {
            // The base kernel: x_{i+1} = m^p_i + s_i z, the step the base sampler takes, with no ratio.
            _sampler.Advance(i, BaseNoise, x, _denoised, _baseState);
            if (scale > 0)
                for (int b = 0; b < n; b++)
                {
                    _streams[b].NextGaussian(_z);
                    var row = x.AsSpan(b * d, d);
                    TensorPrimitives.MultiplyAdd(_z, (float)scale, row, row);
                }
        }
        StepsTaken++;
    }

    /// <summary>After the sampler's last step: weighs each particle by its final potential G(x0) and returns the system.</summary>
    /// <exception cref="InvalidOperationException">Steps are missing, or the system was already finished.</exception>
    /// <exception cref="NonFiniteException">A final sample or its potential is NaN/±∞ under <see cref="NonFinitePolicy.Stop"/>, or every particle was dropped.</exception>
    public SmcSystem Finish()
    {
        if (_finished) throw new InvalidOperationException("the system is finished");
        if (StepsTaken != _sampler.Steps) throw new InvalidOperationException($"{StepsTaken} of the sampler's {_sampler.Steps} steps taken");
        _finished = true;
        int n = Count, d = SampleSize, steps = _sampler.Steps;
        var x = Particles;
        var final = _target.Evaluate(x, n);
        for (int b = 0; b < n; b++)
        {
            if (_dead[b]) continue;
            double g = Numerics.AllFinite(x.AsSpan(b * d, d)) ? final[b] : double.NaN;
            if (!double.IsFinite(g)) { Drop(b, steps); continue; }
            _logWeights[b] += g - _twist[b];
        }
        // Every particle of the system turned NaN/±∞: nothing to weigh, whatever the policy.
        if (_dead.All(v => v)) throw AllDropped(steps);
        _logNormalizer += WeightedSamples.LogMeanExp(_logWeights).Value;
        // The final potentials are kept with the system (0 where the weight is 0), so no estimate evaluates G again.
        for (int b = 0; b < n; b++) if (_dead[b]) final[b] = 0;
        return new SmcSystem(x, (double[])_logWeights.Clone(), _logNormalizer, _resamplings, _evaluations, _dead.Count(v => v), final);
    }

    private void Drop(int row, int step)
    {
        if (_settings.OnNonFinite == NonFinitePolicy.Stop) throw Stopped(step, _system * Count + row);
        int d = SampleSize;
        _dead[row] = true;
        _logWeights[row] = double.NegativeInfinity;
        Particles.AsSpan(row * d, d).Clear();          // keeps the batch's arithmetic finite until resampling replaces it
        ProposalNoise.AsSpan(row * d, d).Clear();
        BaseNoise.AsSpan(row * d, d).Clear();
    }

    private NonFiniteException AllDropped(int step) => Stopped(step, _system * Count);

    private NonFiniteException Stopped(int step, long index) =>
        new(step, (int)index, new GenerationResult([], 0, 0, _evaluations, TimeSpan.Zero, TimeSpan.Zero));

    private static double Ess(double[] logWeights) =>
        logWeights.All(double.IsNegativeInfinity) ? 0 : WeightedSamples.EffectiveSampleSize(WeightedSamples.Normalize(logWeights));
}
