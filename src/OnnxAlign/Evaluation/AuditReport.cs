using OnnxAlign.Alignment;
using OnnxAlign.Core;

namespace OnnxAlign.Evaluation;

/// <summary>
/// One entry of report.json's <c>audits</c> (<c>onnxalign verify</c>): the audit of one λ by <see cref="TiltAudit"/>,
/// serialised by <see cref="IO.ReportJson"/> (a figure that is not finite is written as null).
/// </summary>
/// <param name="Lambda">The temperature λ of the audited tilt θ = a/λ.</param>
/// <param name="ZThreshold">|z| above which a statistic disagrees.</param>
/// <param name="GroundTruth">The importance-weighted base samples the runs are compared with.</param>
/// <param name="Runs">Each audited run (exact, fast) against the ground truth.</param>
public sealed record AuditReport(double Lambda, double ZThreshold, GroundTruthReport GroundTruth, IReadOnlyList<AuditRunReport> Runs)
{
    /// <summary>How the ground truth is made, as the report says it.</summary>
    public const string GroundTruthMethod = "self-normalised importance weights e^<θ,x> of base samples (same sampler, steps and base law)";

    /// <summary>The report of <paramref name="result"/>, the audit of the tilt at temperature <paramref name="lambda"/>.</summary>
    /// <exception cref="ArgumentException">Two statistics of the result have the same name.</exception>
    public static AuditReport Of(AuditResult result, double lambda)
    {
        ArgumentNullException.ThrowIfNull(result);
        var t = result.Truth;
        var truth = new GroundTruthReport(GroundTruthMethod, t.BaseCount, t.EffectiveSampleSize, t.Reliable, t.NetworkEvaluations,
                                          t.EvaluationsPerEffectiveSample, t.KlDivergence, t.LogPartition, Keyed(t.Statistics.Select(s => (s.Name, s.Mean))));
        var runs = result.Runs.Select(run => new AuditRunReport(
            run.Mode, run.MaxAbsZ < result.ZThreshold, run.MaxAbsZ, run.KlDivergence, run.KlZ, run.EffectiveSampleSize, run.NetworkEvaluations,
            run.EvaluationsPerEffectiveSample, Math.Round(run.Seconds, 3),
            Keyed(run.Rows.Select(row => (row.Statistic, new AuditStatisticReport(row.Run.Value, row.Run.StandardError, row.Z)))),
            run.Drift is null ? null : DriftBlock.Of(run.Drift))).ToArray();
        return new AuditReport(lambda, result.ZThreshold, truth, runs);
    }

    /// <summary>Name → value in the statistics' order (a dictionary's keys are written as they are, not in snake_case).</summary>
    private static IReadOnlyDictionary<string, T> Keyed<T>(IEnumerable<(string Name, T Value)> entries)
    {
        var keyed = new Dictionary<string, T>(StringComparer.Ordinal);
        foreach (var (name, value) in entries)
            if (!keyed.TryAdd(name, value)) throw new ArgumentException($"two statistics are named '{name}'", nameof(entries));
        return keyed;
    }
}

/// <summary>The ground truth of an audit (<see cref="AuditTruth"/>) as report.json holds it.</summary>
/// <param name="Method">How it is made (<see cref="AuditReport.GroundTruthMethod"/>).</param>
/// <param name="BaseSamples">Base samples weighted.</param>
/// <param name="EffectiveSampleSize">Kish's ESS of the weights.</param>
/// <param name="Reliable">Whether the ESS reached the reliability threshold.</param>
/// <param name="NetworkEvaluations">What the base run cost.</param>
/// <param name="EvaluationsPerEffectiveSample">Network evaluations per effective sample.</param>
/// <param name="KlDivergence">KL(q‖p) of the weighted law: <c>{value, standard_error}</c>.</param>
/// <param name="LogPartition">log Z: <c>{value, standard_error}</c>.</param>
/// <param name="Statistics">Each statistic's weighted mean by its name, in the audit's order.</param>
public sealed record GroundTruthReport(string Method, int BaseSamples, double EffectiveSampleSize, bool Reliable, long NetworkEvaluations,
                                       double EvaluationsPerEffectiveSample, Estimate KlDivergence, Estimate LogPartition,
                                       IReadOnlyDictionary<string, Estimate> Statistics);

/// <summary>One audited run (<see cref="AuditRun"/>) as report.json holds it.</summary>
/// <param name="Mode"><c>exact</c> or <c>fast</c>.</param>
/// <param name="Agrees">Whether every statistic's |z| is below the threshold.</param>
/// <param name="MaxAbsZ">The largest |z| over the statistics.</param>
/// <param name="KlDivergence">The KL(q‖p) the run reports: <c>{value, standard_error}</c>.</param>
/// <param name="KlZ">Its z against the ground truth's KL.</param>
/// <param name="EffectiveSampleSize">The run's ESS.</param>
/// <param name="NetworkEvaluations">What the run cost.</param>
/// <param name="EvaluationsPerEffectiveSample">Network evaluations per effective sample.</param>
/// <param name="Seconds">Wall time, to the millisecond.</param>
/// <param name="Statistics">Each statistic of the run with its z against the ground truth, by its name, in the audit's order.</param>
/// <param name="Drift">The drift diagnostic (the fast mode), or null.</param>
public sealed record AuditRunReport(string Mode, bool Agrees, double MaxAbsZ, Estimate KlDivergence, double KlZ, double EffectiveSampleSize,
                                    long NetworkEvaluations, double EvaluationsPerEffectiveSample, double Seconds,
                                    IReadOnlyDictionary<string, AuditStatisticReport> Statistics, DriftBlock? Drift);

/// <summary>A statistic of an audited run: its estimate and its z against the ground truth.</summary>
/// <param name="Value">The run's estimate.</param>
/// <param name="StandardError">Its standard error.</param>
/// <param name="Z">(run − truth)/√(se_run² + se_truth²).</param>
public sealed record AuditStatisticReport(double Value, double StandardError, double Z);
