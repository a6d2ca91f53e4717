using OnnxAlign.Core;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment;

/// <summary>
/// report.json's <c>final_tilt</c> block: how the tilt that a constrained, distributional or preference alignment chose
/// was sampled (<see cref="ExactFinalTiltReport"/> or <see cref="FastFinalTiltReport"/>; serialised by
/// <see cref="IO.ReportJson"/> with the fields of its run-time type).
/// </summary>
/// <param name="Mode"><c>exact</c> or <c>fast</c>.</param>
public abstract record FinalTiltReport(string Mode);

/// <summary>The chosen tilt sampled exactly (SMC with exact weights, DESIGN §1d).</summary>
/// <param name="Algorithm">The SMC's algorithm (twisted or noise-space).</param>
/// <param name="EffectiveSampleSize">ESS of the weighted particles.</param>
/// <param name="Particles">Particles drawn.</param>
/// <param name="EvaluationsPerEffectiveSample">Network evaluations per effective sample.</param>
/// <param name="KlDivergence">KL(q‖p) of the returned law from the SMC's weights (null in JSON when not finite).</param>
/// <param name="KlStandardError">Its standard error.</param>
/// <param name="DistinctSamples">Distinct samples among those returned (resampling repeats some).</param>
/// <param name="Iterates">What the dual's iterates were sampled by.</param>
public sealed record ExactFinalTiltReport(string Algorithm, double EffectiveSampleSize, int Particles, double EvaluationsPerEffectiveSample,
                                          double KlDivergence, double KlStandardError, int DistinctSamples, string Iterates) : FinalTiltReport("exact");

/// <summary>The chosen tilt sampled by the fast projected tilt (exact for the true score only, DESIGN §1d).</summary>
/// <param name="Drifting">Whether the drift diagnostic found the sampler off the tilt it is meant to sample.</param>
public sealed record FastFinalTiltReport(bool Drifting) : FinalTiltReport("fast");

/// <summary>The samples of the chosen tilt and their report block.</summary>
/// <param name="Result">The KL aligner's run (samples, SMC or drift diagnostics, warnings).</param>
/// <param name="Report">report.json's <c>final_tilt</c> block.</param>
public sealed record FinalTilt(KlAlignmentResult Result, FinalTiltReport Report)
{
    /// <summary>
    /// Samples p·e^{⟨θ,x⟩} for θ chosen by a convex problem (DESIGN §4, §5) with <see cref="KlAlignment.RunTilt"/>: the
    /// one path every chosen tilt takes, exact (the returned law is the tilt whatever the network's error) or fast.
    /// </summary>
    /// <param name="network">The model's denoiser (not disposed here).</param>
    /// <param name="range">The data range x̂0 is projected onto; null for none.</param>
    /// <param name="sampler">The sampler whose law is p.</param>
    /// <param name="theta">The chosen θ.</param>
    /// <param name="mode">Exact or fast.</param>
    /// <param name="exact">The exact tilt's settings; null for the defaults.</param>
    /// <param name="request">Count, batch, seed, NaN policy and cancellation of the samples.</param>
    /// <param name="progress">Samples finished.</param>
    /// <param name="checkpoint">Finished batches or SMC systems of an interrupted run, kept and reused (a resumed job's); null for none.</param>
    /// <exception cref="ConfigException">The hybrid mode (parameter <c>mode</c>): it applies to a reward's tilt, not to a chosen one.</exception>
    /// <exception cref="NonFiniteException">A sample turned NaN/±∞ under <see cref="NonFinitePolicy.Stop"/>.</exception>
    public static FinalTilt Sample(IDenoiser network, DataRange? range, Sampler sampler, float[] theta, KlTiltMode mode, ExactTiltSettings? exact,
                                   GenerationRequest request, IProgress<GenerationProgress>? progress, BatchCheckpoint? checkpoint = null)
    {
        CheckMode(mode);
        var run = KlAlignment.RunTilt(network, range, sampler, theta, new KlAlignmentSettings { Mode = mode, Exact = exact ?? new ExactTiltSettings() },
                                      request, progress, checkpoint);
        FinalTiltReport report = run.Exact is { } e
            ? new ExactFinalTiltReport(e.Method, e.Particles.EffectiveSampleSize, e.Particles.Count, e.Particles.EvaluationsPerEffectiveSample,
                                       e.KlDivergence.Value, e.KlDivergence.StandardError, e.DistinctSamples,
                                       "every dual iterate was sampled by the exact tilt too (its moments and KL are of q_θ itself)")
            : new FastFinalTiltReport(run.Drift!.IsDrifting);
        return new FinalTilt(run, report);
    }

    /// <summary>Refuses the hybrid mode before any work is done.</summary>
    /// <exception cref="ConfigException">The hybrid mode (parameter <c>mode</c>).</exception>
    internal static void CheckMode(KlTiltMode mode)
    {
        if (mode == KlTiltMode.Hybrid)
            throw ConfigException.For("mode", "hybrid: applies to a reward's tilt; a chosen tilt is sampled exact or fast");
    }
}
