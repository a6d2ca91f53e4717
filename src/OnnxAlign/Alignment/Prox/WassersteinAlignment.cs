using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Alignment.Prox;

/// <summary>Mean, least and largest value of a per-sample figure of a prox stage.</summary>
/// <param name="Mean">The mean over samples.</param>
/// <param name="Min">The least value.</param>
/// <param name="Max">The largest value.</param>
public sealed record ProxSummary(double Mean, double Min, double Max)
{
    /// <summary>The summary of <paramref name="values"/> (at least one).</summary>
    public static ProxSummary Of(IReadOnlyCollection<double> values) => new(values.Average(), values.Min(), values.Max());
}

/// <summary>What the prox did to one sample, under its run-wide index (report.json's <c>per_sample</c> rows).</summary>
/// <param name="Index">The sample's run-wide index.</param>
/// <param name="RewardBefore">r(x).</param>
/// <param name="RewardAfter">r(T(x)).</param>
/// <param name="TransportCost">c(x, T(x)).</param>
/// <param name="Objective">r(T(x)) − λ·c(x, T(x)).</param>
/// <param name="CertifiedGap">The certified optimality gap reached.</param>
/// <param name="BoxActive">Whether the value box was active.</param>
/// <param name="Method">The solver that served the sample.</param>
/// <param name="Iterations">Its iterations (or cells).</param>
public sealed record ProxSampleReport(int Index, double RewardBefore, double RewardAfter, double TransportCost, double Objective,
                                      double CertifiedGap, bool BoxActive, string Method, int Iterations);

/// <summary>
/// The report of a Wasserstein prox stage (DESIGN §3; report.json's <c>alignment</c> block of <c>generate --align w2</c>
/// and of <c>prox</c>): the settings, per-sample results and their summaries, as a typed record written by
/// <see cref="IO.ReportJson"/>.
/// </summary>
/// <param name="Method">Always <c>w2-prox</c>.</param>
/// <param name="Reward">The reward's name.</param>
/// <param name="Lambda">λ, the price of moving.</param>
/// <param name="Algorithm">The oracle's algorithm (picked from the reward's structure).</param>
/// <param name="Cost">The transport cost.</param>
/// <param name="Box">The value box [lower, upper], or null for none.</param>
/// <param name="GapTolerance">The relative certified gap asked for.</param>
/// <param name="RewardBefore">r(x) over the samples.</param>
/// <param name="RewardAfter">r(T(x)) over the samples.</param>
/// <param name="TransportCost">c(x, T(x)) over the samples.</param>
/// <param name="Objective">r(T(x)) − λ·c over the samples.</param>
/// <param name="MaxCertifiedGap">The largest certified gap.</param>
/// <param name="SamplesAboveGapTolerance">Samples whose certified gap is above the tolerance (a cell or iteration budget ran out).</param>
/// <param name="BoxActiveSamples">Samples whose value box was active.</param>
/// <param name="SamplesPerSecond">Throughput of the stage.</param>
/// <param name="PerSample">Each sample's result.</param>
public sealed record ProxReport(string Method, string Reward, double Lambda, string Algorithm, string Cost, double[]? Box, double GapTolerance,
                                ProxSummary RewardBefore, ProxSummary RewardAfter, ProxSummary TransportCost, ProxSummary Objective,
                                double MaxCertifiedGap, int SamplesAboveGapTolerance, int BoxActiveSamples, double SamplesPerSecond,
                                IReadOnlyList<ProxSampleReport> PerSample)
{
    /// <summary>The report of <paramref name="batch"/>, moved by <paramref name="oracle"/>; <paramref name="indices"/> are its samples' run-wide indices.</summary>
    public static ProxReport Of(ProxOracle oracle, ProxBatch batch, IReadOnlyList<int> indices)
    {
        if (indices.Count != batch.Results.Length) throw new ArgumentException($"{indices.Count} indices for {batch.Results.Length} samples", nameof(indices));
        var results = batch.Results;
        ProxSummary Summary(Func<ProxResult, double> value) => ProxSummary.Of(results.Select(value).ToArray());
        double tolerance = oracle.Settings.Tolerance;
        return new ProxReport("w2-prox", oracle.Reward.Name, oracle.Settings.Lambda, oracle.Method,
            oracle.Settings.Cost.IsWeighted ? "weighted ½Σw(x−y)²" : "½‖x−y‖²",
            oracle.Settings.Box is { } box ? [box.Lower, box.Upper] : null, tolerance,
            Summary(r => r.RewardBefore), Summary(r => r.RewardAfter), Summary(r => r.TransportCost), Summary(r => r.Objective),
            batch.MaxGap, results.Count(r => r.CertifiedGap > tolerance * Math.Max(1, Math.Abs(r.Objective)) * (1 + 1e-9)),
            batch.BoxActiveCount, batch.SamplesPerSecond,
            results.Select((r, i) => new ProxSampleReport(indices[i], r.RewardBefore, r.RewardAfter, r.TransportCost, r.Objective,
                                                           r.CertifiedGap, r.BoxActive, r.Method, r.Iterations)).ToArray());
    }
}

/// <summary>A Wasserstein-aligned run: the model's samples, where the prox moved them, and the report.</summary>
/// <param name="Base">The samples of the model's law p (with their run-wide indices, network evaluations and times).</param>
/// <param name="Aligned">T(x) of every base sample, and what the prox did to each.</param>
/// <param name="Report">The stage's report.</param>
public sealed record WassersteinResult(GenerationResult Base, ProxBatch Aligned, ProxReport Report);

/// <summary>
/// Wasserstein alignment (DESIGN §3) as one call: samples of the model's law, then the prox stage T(x) = argmax_y
/// r(y) − λ·c(x, y) on each, with the algorithm the <see cref="ProxOracle"/> picked from the reward's structure. The
/// same two steps <c>onnxalign generate --align w2</c> runs.
/// </summary>
public static class WassersteinAlignment
{
    /// <summary>Generates the request's samples of <paramref name="law"/> and moves each by <paramref name="oracle"/>.</summary>
    /// <param name="law">The law to sample (the network, or a decorator of it; not disposed here).</param>
    /// <param name="sampler">The reverse-time sampler.</param>
    /// <param name="oracle">The prox oracle (thread-safe): reward, λ, cost, value box, tolerance.</param>
    /// <param name="request">Count, shard, batch, seed, NaN policy, checkpoint and cancellation of the generation; the cancellation also stops the prox stage.</param>
    /// <param name="progress">The generation's progress, then (without <paramref name="proxProgress"/>) the prox stage's (samples done of the shard).</param>
    /// <param name="maxParallelism">Prox worker threads; default all cores.</param>
    /// <param name="proxProgress">The prox stage's progress, where the caller shows the two stages apart; null reports it to <paramref name="progress"/>.</param>
    /// <exception cref="NonFiniteException">A sample turned NaN/±∞ under <see cref="NonFinitePolicy.Stop"/>.</exception>
    /// <exception cref="OperationCanceledException">The request's cancellation fired.</exception>
    public static WassersteinResult Run(IDenoiser law, Sampler sampler, ProxOracle oracle, GenerationRequest request,
                                        IProgress<GenerationProgress>? progress = null, int? maxParallelism = null,
                                        IProgress<GenerationProgress>? proxProgress = null)
    {
        if (oracle.Reward.Size != law.SampleSize)
            throw new ArgumentException($"the prox's reward takes samples of {oracle.Reward.Size} values, the model's have {law.SampleSize}", nameof(oracle));
        var drawn = Generation.Run(law, sampler, request, progress is null ? null : progress.Report);
        var proxReport = proxProgress ?? progress;
        var moved = ProxStage.Apply(oracle, drawn.Samples, proxReport is null ? null : proxReport.Report, maxParallelism, request.Cancellation);
        return new WassersteinResult(drawn, moved, ProxReport.Of(oracle, moved, drawn.Indices));
    }
}
