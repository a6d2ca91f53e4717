using OnnxAlign.Core;
using OnnxAlign.Evaluation;

namespace OnnxAlign.Cli;

/// <summary>
/// <c>onnxalign bench --kl-mixture</c>: prints the table of the library's <see cref="MixtureBenchmark"/> (the KL mixture
/// against importance resampling and best-of-N on gmm2d, KS distances to the known aligned law), a row as each λ is measured.
/// </summary>
internal static class MixtureBench
{
    public static MixtureBenchmarkResult Run(string toyDirectory, int count) =>
        MixtureBenchmark.Run(toyDirectory, new MixtureBenchmarkSettings { Count = count }, progress: new InlineProgress<MixtureBenchmarkProgress>(Print));

    private static void Print(MixtureBenchmarkProgress progress)
    {
        switch (progress)
        {
            case MixtureBenchmarkStarted s:
                Console.WriteLine($"KL mixture vs baselines on {s.Model} (reward {s.Reward}, DDIM {s.Steps} steps, {s.Count} samples; KS critical value {s.KsCritical:F4})");
                Console.WriteLine($"  {"λ",-6} {"method",-14} {"evals/sample",12} {"acceptance",10} {"KS",8}  SIR KS at {string.Join(", ", s.BudgetMultipliers.Select(m => $"{m}×"))} the mixture's evaluations   best-of-N KS (1×)");
                break;
            case MixtureBenchmarkRowFinished { Row: var row }:
                Console.WriteLine($"  {row.Lambda,-6:G3} {row.MixtureMethod,-14} {row.MixtureEvaluationsPerSample,12:F0} {row.MixtureAcceptance,10:F3} {row.MixtureKs,8:F4}  " +
                                  $"{string.Join("  ", row.SirKsByBudgetMultiplier.Values.Select(k => k.ToString("F4")))}  (SIR needs {row.SirBudgetToReachCriticalKs})   {row.BestOfNKs:F4} (N = {row.BestOfN})");
                break;
        }
    }
}
