using OnnxAlign.Alignment;
using OnnxAlign.Core;
using OnnxAlign.Model;
using OnnxAlign.Sampling;

namespace OnnxAlign.Cli;

/// <summary>
/// A KL-aligned (tilted) run as generate runs it: the library's aligner with a progress bar, the library's report block
/// (<see cref="KlAlignmentReports"/>), and what the console says about them.
/// </summary>
internal static class AlignmentReport
{
    /// <summary>What the library's report of a KL-aligned run needs from the plan, with the library's texts said in the CLI's words.</summary>
    public static KlReportInputs Inputs(TiltOptions.Plan plan, IDenoiser denoiser, DataRange? range, Sampler sampler, GenerationRequest request,
                                        string? conditionedLaw = null, string? plannedDataVarianceSource = null) => new()
    {
        Network = denoiser, Range = range, Sampler = sampler, Request = request, Reward = plan.Reward, Lambda = plan.Lambda, Theta = plan.Theta,
        Settings = plan.Settings, ReferenceCount = plan.ReferenceCount, ConditionedLaw = conditionedLaw,
        PlannedDataVarianceSource = plannedDataVarianceSource, Describe = Flags.Describe,
    };

    /// <summary>
    /// Runs the KL alignment the plan holds (the library picked the algorithm from the reward's structure) and, except
    /// for the fast and hybrid tilts (whose block is made after their samples, <see cref="KlAlignmentReports.Of"/>), the
    /// library's alignment block of report.json; finished work goes to the checkpoint, so --resume repeats none.
    /// </summary>
    public static (KlAlignmentResult Run, KlAlignmentReport? Report) Run(TiltOptions.Plan plan, KlReportInputs inputs, BatchCheckpoint checkpoint,
                                                                         ISmcSystemStore? systems = null)
    {
        var (denoiser, range, sampler, request) = (inputs.Network, inputs.Range, inputs.Sampler, inputs.Request);
        string label = plan.Algorithm switch
        {
            KlAlgorithm.ExactTilt => $"generate (exact tilt, {(sampler.IsStochastic ? "twisted SMC" : "noise-space SMC")})",
            KlAlgorithm.TiltMixture => "generate (KL mixture)",
            KlAlgorithm.ExactReward => $"generate (exact, {(sampler.IsStochastic ? "twisted SMC" : "noise-space SMC")} on f(Ax)/λ)",
            KlAlgorithm.HybridTilt => "generate (hybrid tilt)",
            KlAlgorithm.BlackBox => $"generate ({BlackBoxAlignment.Name(plan.Settings.BlackBox.Method)} on a network reward)",
            _ => "generate (fast tilt)",
        };
        var sideRequest = request with { Checkpoint = null };
        if (plan.Algorithm == KlAlgorithm.BlackBox && sampler.IsStochastic && plan.Settings.BlackBox.Method is BlackBoxMethod.TiltSmc or BlackBoxMethod.TiltImportance
            && plan.Settings.BlackBox.Fitted is null && checkpoint.ReadNote(BlackBoxAlignment.FitNote) is null)
        {
            var fit = plan.Settings.BlackBox.Fit;
            Console.WriteLine($"fitting the proposal tilt: {fit.PilotRounds} pilot round{(fit.PilotRounds == 1 ? "" : "s")} of {fit.PilotSamples} samples, " +
                              $"then {fit.Scales.Distinct().Count()} proposal scales tried on {fit.ScaleTrialParticles} particles each " +
                              $"(at most {fit.NetworkEvaluations(sampler)} network evaluations) …");
        }
        var run = ProgressReporter.Run(label, progress =>
        {
            var report = new InlineProgress<GenerationProgress>(progress);
            return plan.Reward is { } reward && plan.Lambda is { } lambda
                ? KlAlignment.Run(denoiser, range, sampler, reward, lambda, plan.Settings, sideRequest, report, checkpoint, systems)
                : KlAlignment.RunTilt(denoiser, range, sampler, plan.Theta, plan.Settings, sideRequest, report, checkpoint, systems);
        });
        if (run.Block is not null) return (run, KlAlignmentReports.Of(run, inputs));
        KlAlignmentReport? report = run.Tilt is null ? KlAlignmentReports.Of(run, inputs) : null;
        switch (report)
        {
            case ExactAlignmentReport:
                var particles = run.Exact!.Particles;
                Console.WriteLine($"exact tilt ({run.Exact.Method}): ESS {particles.EffectiveSampleSize:F0} of {particles.Count} particles, " +
                                  $"{particles.EvaluationsPerEffectiveSample:F0} network evaluations per effective sample; " +
                                  $"KL(q‖p) = {run.Exact.KlDivergence.Value:G4} ± {run.Exact.KlDivergence.StandardError:G2} nats");
                break;
            case BestOfAlignmentReport:
                Console.WriteLine($"best-of-{plan.Settings.BlackBox.BestOf}: {run.Samples.NetworkEvaluations} network evaluations (not a sampler of π: no ESS, log Z or KL)");
                break;
            case MixtureAlignmentReport mixture:
                var drawn = run.Mixture!;
                if (run.ResumedSetup) Console.WriteLine($"resumed: the mixture's set-up ({drawn.Components.Count} tilts, ε = {drawn.Epsilon:G4}) was read from the checkpoint, not recomputed");
                Console.WriteLine($"KL mixture ({mixture.Method}): {drawn.Components.Count} tilts, acceptance {drawn.AcceptanceRate:P1}, " +
                                  $"{mixture.EvaluationsPerAcceptedSample:F0} network evaluations per accepted sample (set-up {drawn.SetupEvaluations} more)");
                break;
        }
        foreach (var warning in run.Warnings) Console.Error.WriteLine($"warning: {Flags.Describe(warning)} (see report.json)");
        return (run, report);
    }

    /// <summary>
    /// The fast tilt's log Z and KL(q‖p) (DESIGN §1), by the library; it warns when the KL estimate is negative. This
    /// runs after the samples are written, so that the images are there at once; it costs --logz-nodes × --logz-samples
    /// tilted samples.
    /// </summary>
    public static TiltLogPartitionReport LogPartition(KlReportInputs inputs, float[]? tiltedSamples)
    {
        var estimate = KlAlignmentReports.EstimateLogPartition(inputs, tiltedSamples);
        if (estimate.KlDivergence.Value is < 0)
            Console.Error.WriteLine($"warning: the KL estimate is negative ({estimate.KlDivergence.Value:G3}): the fast tilt does not sample the tilt it is meant to (DESIGN §1d); use --tilt-mode exact");
        return estimate;
    }
}
