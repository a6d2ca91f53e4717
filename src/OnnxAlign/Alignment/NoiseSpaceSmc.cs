using OnnxAlign.Core;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>A deterministic pipeline from initial noise to samples, on a batch: <paramref name="samples"/> = Φ(<paramref name="initialNoise"/>), <paramref name="count"/> samples one after another.</summary>
public delegate void NoiseMap(ReadOnlySpan<float> initialNoise, int count, Span<float> samples);

/// <summary>
/// Exact alignment for a deterministic sampler (DDIM with η = 0, DPM-Solver++): its law is the image of the initial
/// noise under a fixed map Φ (x_T ↦ x0), with no transition density to weigh, so the target is written on the noise:
/// π(x_T) ∝ N(x_T; 0, I)·e^{G(Φ(x_T))}, and x0 = Φ(x_T) ~ p·e^{G} exactly. A tempered SMC sampler (Del Moral, Doucet &amp;
/// Jasra 2006) moves particles from N(0, I) to π through π_β ∝ N·e^{βG}: each stage raises β as far as the effective
/// sample size stays above the threshold, resamples, and moves every particle by preconditioned Crank–Nicolson
/// Metropolis steps x' = √(1 − ρ²)·x + ρ·ξ (reversible for N(0, I), so the acceptance ratio is e^{β(G(Φ(x')) − G(Φ(x)))}
/// and needs no gradient; Cotter et al. 2013), with ρ adapted to the acceptance rate. When G is weak enough the first
/// stage reaches β = 1 at once and the run is plain importance sampling from p. The product of the stages' mean
/// weights is an unbiased Ẑ. Cost: one base run (steps network evaluations) per particle and move.
/// </summary>
public sealed class NoiseSpaceSmc
{
    // Φ on a batch, in place (x_T in, x0 out), for system s and move m.
    private readonly Action<float[], int, int, int> _map;
    private readonly int _sampleSize;
    private readonly int _steps;
    private readonly BatchPotential _target;

    /// <summary>Targets p·e^{G} for the law p of <paramref name="sampler"/> on <paramref name="baseLaw"/>.</summary>
    public NoiseSpaceSmc(IDenoiser baseLaw, Sampler sampler, LogPotential target, SmcSettings? settings = null, int movesPerStage = 3)
        : this(baseLaw, sampler, Potentials.Batch(target), settings, movesPerStage) { }

    /// <summary>Targets p·e^{G} for the law p of <paramref name="sampler"/> on <paramref name="baseLaw"/>, G evaluated a batch at a time.</summary>
    public NoiseSpaceSmc(IDenoiser baseLaw, Sampler sampler, BatchPotential target, SmcSettings? settings = null, int movesPerStage = 3)
        : this(baseLaw.SampleSize, sampler.Steps, target, settings, movesPerStage, valid => (x, count, system, move) =>
          {
              // Particle b of system s maps with stream (seed, s·N + b) split by the move (a deterministic sampler draws none).
              var streams = Enumerable.Range(0, count).Select(b => new NoiseStream(valid.Seed, (long)system * valid.ParticlesPerSystem + b).Split(move)).ToArray();
              sampler.Sample(baseLaw, x, count, streams);
          })
    { }

    /// <summary>
    /// Targets p·e^{G} for the law p of a caller's own deterministic pipeline Φ (its loop, its network calls): p is the
    /// image of N(0, I) under <paramref name="map"/>, so the same tempered SMC on the initial noise applies unchanged.
    /// </summary>
    /// <param name="map">Φ: x_T ↦ x0 on a batch; it must be deterministic (DDIM with η = 0, DPM-Solver++, an ODE solver).</param>
    /// <param name="sampleSize">Values per sample (of x_T and of x0).</param>
    /// <param name="steps">Network evaluations per sample of one <paramref name="map"/> call (its steps), for the cost figures.</param>
    /// <param name="target">G, evaluated a batch at a time.</param>
    /// <param name="settings">Layout of the run.</param>
    /// <param name="movesPerStage">Metropolis moves after each resampling.</param>
    public NoiseSpaceSmc(NoiseMap map, int sampleSize, int steps, BatchPotential target, SmcSettings? settings = null, int movesPerStage = 3)
        : this(sampleSize, steps, target, settings, movesPerStage, _ =>
          {
              ArgumentNullException.ThrowIfNull(map);
              return (x, count, _, _) => map((float[])x.Clone(), count, x);
          })
    { }

    private NoiseSpaceSmc(int sampleSize, int steps, BatchPotential target, SmcSettings? settings, int movesPerStage,
                          Func<SmcSettings, Action<float[], int, int, int>> map)
    {
        ArgumentNullException.ThrowIfNull(target);
        ArgumentOutOfRangeException.ThrowIfLessThan(sampleSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        if (movesPerStage < 1) throw new ArgumentOutOfRangeException(nameof(movesPerStage), movesPerStage, "expected ≥ 1");
        (_sampleSize, _steps, _target) = (sampleSize, steps, target);
        Settings = (settings ?? new SmcSettings()).Validated();
        MovesPerStage = movesPerStage;
        _map = map(Settings);
    }

    /// <summary>The run's layout.</summary>
    public SmcSettings Settings { get; }

    /// <summary>The smallest increase of β a tempering stage makes.</summary>
    public const double MinimumTemperatureStep = 1e-6;

    /// <summary>Stages in a row that only reach <see cref="MinimumTemperatureStep"/> before a run is refused as degenerate (a <see cref="ConfigException"/> on <c>target</c>).</summary>
    public const int StalledStageLimit = 20;

    /// <summary>Metropolis moves after each resampling.</summary>
    public int MovesPerStage { get; }

    /// <summary>Stages and move acceptance of the systems run so far, for reports.</summary>
    public IReadOnlyList<(int System, double Beta, double Acceptance, double Rho)> Trace => _trace;

    private readonly List<(int, double, double, double)> _trace = [];

    /// <summary>Runs system <paramref name="system"/> (its particles start from the noise streams of indices system·N …).</summary>
    public SmcSystem RunSystem(int system, CancellationToken cancellation = default)
    {
        int n = Settings.ParticlesPerSystem, d = _sampleSize;
        var (noise, streams, resampler) = SmcParticles.Start(Settings.Seed, system, n, d);
        long evaluations = 0;
        var (samples, g) = Map(noise, n, system, 0, ref evaluations, cancellation);
        if (g.All(v => double.IsNegativeInfinity(v)))
            throw new NonFiniteException(_steps, system * n, new GenerationResult([], 0, 0, evaluations, TimeSpan.Zero, TimeSpan.Zero));
        var logWeights = new double[n];
        double beta = 0, logNormalizer = 0, rho = 0.5;
        int resamplings = 0, move = 0, stalled = 0;
        while (true)
        {
            // The largest β' ≤ 1 whose incremental weights keep the ESS above the threshold (bisection).
            double next = 1;
            if (Ess(logWeights, g, next - beta) < Settings.ResampleThreshold * n)
            {
                double low = beta, high = 1;
                for (int k = 0; k < 60; k++)
                {
                    double mid = (low + high) / 2;
                    if (Ess(logWeights, g, mid - beta) >= Settings.ResampleThreshold * n) low = mid; else high = mid;
                }
                next = Math.Max(low, beta + MinimumTemperatureStep);
                // Even the smallest step collapses the ESS: G's spread over the particles exceeds ~10⁶ nats, so the
                // tempering would crawl to β = 1 in up to 10⁶ stages. That is a target no SMC of this size can reach.
                stalled = low - beta < MinimumTemperatureStep ? stalled + 1 : 0;
                if (stalled >= StalledStageLimit)
                    throw ConfigException.For("target", $": the tilt is too strong for the noise-space SMC (after {resamplings} stages at β = {beta:G3}, " +
                        $"{StalledStageLimit} stages in a row could not raise β by {MinimumTemperatureStep:G1} without the ESS collapsing, i.e. G varies by more than " +
                        $"~{1 / MinimumTemperatureStep:G1} over the particles); take a larger λ (a weaker tilt)");
            }
            for (int b = 0; b < n; b++) logWeights[b] += (next - beta) * g[b];
            beta = Math.Min(next, 1);
            if (beta >= 1) break;

            var (logMean, ancestors) = SmcParticles.Resample(logWeights, resampler, streams, resamplings, d, noise, samples);
            logNormalizer += logMean;
            g = ancestors.Select(a => g[a]).ToArray();
            resamplings++;

            for (int m = 0; m < MovesPerStage; m++)
            {
                cancellation.ThrowIfCancellationRequested();
                // pCN proposal x' = √(1 − ρ²)·x + ρ·ξ
                var proposed = new float[n * d];
                var xi = new float[d];
                float keep = (float)Math.Sqrt(1 - rho * rho);
                for (int b = 0; b < n; b++)
                {
                    streams[b].NextGaussian(xi);
                    var row = proposed.AsSpan(b * d, d);
                    var current = noise.AsSpan(b * d, d);
                    for (int k = 0; k < d; k++) row[k] = keep * current[k] + (float)rho * xi[k];
                }
                var (proposedSamples, proposedG) = Map(proposed, n, system, ++move, ref evaluations, cancellation);
                int accepted = 0;
                for (int b = 0; b < n; b++)
                {
                    double logU = Math.Log(1 - streams[b].NextDouble());
                    if (!double.IsFinite(proposedG[b]) || !(logU < beta * (proposedG[b] - g[b]))) continue;
                    proposed.AsSpan(b * d, d).CopyTo(noise.AsSpan(b * d, d));
                    proposedSamples.AsSpan(b * d, d).CopyTo(samples.AsSpan(b * d, d));
                    g[b] = proposedG[b];
                    accepted++;
                }
                double acceptance = (double)accepted / n;
                lock (_trace) _trace.Add((system, beta, acceptance, rho));
                // Aim at an acceptance between 0.2 and 0.5 (a larger step decorrelates faster while it is accepted).
                if (acceptance < 0.2) rho *= 0.6;
                else if (acceptance > 0.5) rho = Math.Min(1, rho * 1.4);
            }
        }
        logNormalizer += WeightedSamples.LogMeanExp(logWeights).Value;
        // g is G of each particle's current x0: kept with the system (0 where a dropped particle's weight is 0).
        int dropped = g.Count(v => !double.IsFinite(v));
        return new SmcSystem(samples, logWeights, logNormalizer, resamplings, evaluations, dropped, g.Select(v => double.IsFinite(v) ? v : 0).ToArray());
    }

    // x0 = Φ(x_T) for a batch and G of each; a particle that turns NaN/±∞ gets G = −∞ under Skip.
    private (float[] Samples, double[] G) Map(float[] initial, int n, int system, int move, ref long evaluations, CancellationToken cancellation)
    {
        cancellation.ThrowIfCancellationRequested();
        int d = _sampleSize;
        var x = (float[])initial.Clone();
        _map(x, n, system, move);
        evaluations += (long)n * _steps;
        var g = _target.Evaluate(x, n);
        for (int b = 0; b < n; b++)
        {
            var row = x.AsSpan(b * d, d);
            if (!Numerics.AllFinite(row)) g[b] = double.NaN;
            if (double.IsFinite(g[b])) continue;
            if (Settings.OnNonFinite == NonFinitePolicy.Stop)
                throw new NonFiniteException(_steps, system * n + b, new GenerationResult([], 0, 0, evaluations, TimeSpan.Zero, TimeSpan.Zero));
            g[b] = double.NegativeInfinity;
            row.Clear();
        }
        return (x, g);
    }

    private static double Ess(double[] logWeights, double[] g, double step)
    {
        var combined = new double[g.Length];
        for (int b = 0; b < g.Length; b++) combined[b] = logWeights[b] + step * g[b];
        return combined.All(double.IsNegativeInfinity) ? 0 : WeightedSamples.EffectiveSampleSize(WeightedSamples.Normalize(combined));
    }
}
